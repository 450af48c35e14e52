from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import pipeline

from model import (
    ArtifactError,
    InferenceError,
    TextClassifier,
    TriageModel,
    choose_device,
)
from model.artifacts import read_manifest, write_manifest


def test_artifact_loads_with_a_plain_transformers_pipeline(tiny_model_dir):
    classify = pipeline("text-classification", model=str(tiny_model_dir / "intent"))
    assert classify("i want a refund thanks")[0]["label"] == "get_refund"


def test_predict_is_batch_first_and_in_input_order(tiny_model):
    texts = ["track my order thanks", "i want a refund", "my password is awful", "talk to an agent please"] * 20
    predictions = tiny_model.predict(texts)
    assert [p.intent.label for p in predictions[:4]] == [
        "track_order",
        "get_refund",
        "recover_password",
        "contact_human_agent",
    ]
    assert all(len(p.intent.top_k) == 3 for p in predictions)
    assert all(abs(sum(p.sentiment.scores.values()) - 1) < 1e-3 for p in predictions)
    one_by_one = [tiny_model.predict([t])[0].intent.label for t in texts[:4]]
    assert one_by_one == [p.intent.label for p in predictions[:4]]
    assert tiny_model.predict([]) == []


def test_temperature_from_the_manifest_is_applied(tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir / "intent", tmp_path / "intent")
    manifest = read_manifest(tmp_path / "intent")
    write_manifest(tmp_path / "intent", manifest.model_copy(update={"temperature": 4.0}))
    cool, hot = TextClassifier.load(tiny_model_dir / "intent"), TextClassifier.load(tmp_path / "intent")
    text = ["i want a refund thanks"]
    np.testing.assert_allclose(cool.logits(text), hot.logits(text))
    assert hot.predict_proba(text).max() < cool.predict_proba(text).max()


def test_forward_passes_run_longest_first_alternating_models_with_the_same_answers(tiny_model_dir, monkeypatch):
    texts = [
        "track my order",
        "i want a refund thanks",
        "ok",
        "my password is awful and i am locked out",
        "talk to an agent please",
        "refund",
        "where is my money i have waited three weeks",
    ] * 3
    shared = TriageModel.load(tiny_model_dir, batch_size=4)  # 6 passes per model, two threads on 2+ cores
    alone = TriageModel.load(tiny_model_dir, batch_size=4)
    if alone._pool is not None:
        alone._pool.shutdown()
    alone._pool = None  # one thread runs every pass
    calls = []
    for model in (alone.intent, alone.sentiment):
        real = model.run_pass

        def spy(ids, index, out, real=real, task=model.manifest.task):
            calls.append((task, max(len(ids[i]) for i in index)))
            return real(ids, index, out)

        monkeypatch.setattr(model, "run_pass", spy)
    expected = alone._probabilities(texts)
    assert [task for task, _ in calls] == ["intent", "sentiment"] * 6
    widths = [width for _, width in calls]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    for got, want in zip(shared._probabilities(texts), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class NanNetwork(torch.nn.Module):
    def forward(self, input_ids, **_kwargs):
        return SimpleNamespace(logits=torch.full((input_ids.shape[0], 3), float("nan")))


class ExplodingNetwork(torch.nn.Module):
    def forward(self, input_ids, **_kwargs):
        raise RuntimeError(f"cannot handle {input_ids.tolist()} 'secret customer words'")


def test_non_finite_scores_raise_inference_error(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.sentiment, "network", NanNetwork())
    with pytest.raises(InferenceError, match="non-finite"):
        tiny_model.predict(["i want a refund"])


def test_a_model_exception_never_quotes_the_input(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.intent, "network", ExplodingNetwork())
    with pytest.raises(InferenceError) as info:
        tiny_model.predict(["secret customer words"])
    assert "secret" not in str(info.value)


def test_inconsistent_artifacts_are_refused(tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir / "intent", tmp_path / "intent")
    manifest = read_manifest(tmp_path / "intent")
    write_manifest(tmp_path / "intent", manifest.model_copy(update={"labels": list(reversed(manifest.labels))}))
    with pytest.raises(ArtifactError, match="does not match"):
        TextClassifier.load(tmp_path / "intent")
    with pytest.raises(ArtifactError, match="train a model first"):
        TriageModel.load(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid manifest"):
        TextClassifier.load(tmp_path / "bad")


def test_device_choice():
    choice = choose_device("cpu")
    assert choice.device == torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert (choice.autocast_dtype == torch.bfloat16) == native
    assert choose_device("cpu", bf16=False).autocast_dtype is None
    with pytest.raises(ValueError):
        choose_device("tpu")


def test_bf16_only_where_the_cpu_computes_it(monkeypatch):
    # AVX-512 without its bf16 extension emulates bf16, slower than float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert choose_device("cpu").autocast_dtype is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert choose_device("cpu").autocast_dtype == torch.bfloat16


def test_passes_are_cut_where_padding_costs_more_than_a_pass():
    from model.classifier import plan_passes

    def plan(lengths, most, cost):
        passes = plan_passes(lengths, most, cost)
        assert sorted(i for p in passes for i in p.tolist()) == list(range(len(lengths)))  # each text once
        assert all(0 < len(p) <= most for p in passes)
        return [sorted(lengths[i] for i in p) for p in passes]

    # eight short texts and two long ones: a pass of ten would pad the eight by 30 tokens each
    lengths = [40, 5, 5, 5, 40, 5, 5, 5, 5, 5]
    assert plan(lengths, 16, 14) == [[5] * 8, [40, 40]]
    assert plan(lengths, 16, 0) == [sorted(lengths)]  # no pass cost (GPU): one pass up to the most
    assert plan(lengths, 4, 0) == [[5] * 4, [5] * 4, [40, 40]]
    # one length throughout: the fewest passes, each as full as allowed
    assert sorted(map(len, plan([9] * 10, 4, 14))) == [2, 4, 4]
    # padding two texts by one token each (2) costs less than a pass (14): one pass
    assert plan([10, 11, 10, 11], 16, 14) == [[10, 10, 11, 11]]
    # padding two texts by ten tokens (20) costs more than a pass (14): two
    assert plan([10, 20, 10, 20], 16, 14) == [[10, 10], [20, 20]]
    assert plan([], 16, 14) == [] and plan([7], 16, 14) == [[7]]


def test_cpu_classifiers_cut_passes_by_cost(tiny_model):
    from model.classifier import CPU_PASS_COST_TOKENS

    assert tiny_model.intent.pass_cost_tokens == CPU_PASS_COST_TOKENS > 0
    ids = [[1] * 5] * 8 + [[1] * 40] * 2
    assert [len(p) for p in tiny_model.intent.passes(ids, 16)] == [8, 2]


def test_a_tokenizer_that_does_not_fit_or_damaged_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir / "intent", tmp_path / "no-tokenizer")
    (tmp_path / "no-tokenizer" / "tokenizer.json").unlink()  # what is left knows only the special tokens
    with pytest.raises(ArtifactError, match="tokenizer file is missing"):
        TextClassifier.load(tmp_path / "no-tokenizer")
    shutil.copytree(tiny_model_dir / "intent", tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="cannot load the model"):
        TextClassifier.load(tmp_path / "truncated", backend="torch")


def test_cpu_plan_settings_are_checked_and_applied(monkeypatch):
    from pydantic import ValidationError

    from consumer.settings import Settings
    from model.classifier import cpu_plan

    monkeypatch.setenv("TRIAGE_PARALLEL_MODELS", "off")
    monkeypatch.setenv("TRIAGE_TORCH_THREADS", "1")
    settings = Settings()
    assert settings.parallel_models is False and settings.torch_threads == 1
    plan = cpu_plan(settings.torch_threads, settings.parallel_models)
    assert plan.threads == 1 and plan.parallel_models is False
    monkeypatch.setenv("TRIAGE_PARALLEL_MODELS", "maybe")  # was silently false
    with pytest.raises(ValidationError, match="parallel_models"):
        Settings()
    monkeypatch.setenv("TRIAGE_PARALLEL_MODELS", "on")
    monkeypatch.setenv("TRIAGE_TORCH_THREADS", "abc")
    with pytest.raises(ValidationError, match="torch_threads"):
        Settings()
