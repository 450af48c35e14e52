"""`triage bench` on tiny models: it runs and reports every number (speed is not asserted), and the
model's fast paths it measures give the same numbers as the plain Hugging Face way."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from consumer.bench import BenchOptions, load_texts, markdown, pick, run_bench

def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value) and value > 0


@pytest.mark.slow
@pytest.mark.integration
def test_bench_json_reports_every_measurement(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("TRIAGE_BATCH_SIZE", "32")  # several batches out of 200 (the rate excludes the first)
    args = argparse.Namespace(json=True, n=200, model_dir=tiny_model_dir, seed_texts=10, model_texts=200, latency_s=2,
                              members=2)
    assert run_bench(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout holds exactly one JSON object: progress went to stderr
    assert {"seed", "model", "end_to_end", "latency", "ratios", "load_before", "load_after"} <= set(result)

    assert result["seed"]["texts"] == 10 and _positive(result["seed"]["per_s"])
    assert result["model"]["texts"] == 200 and _positive(result["model"]["per_s"])
    assert result["model"]["batch_size"] == result["batch_size"]
    e2e = result["end_to_end"]
    assert e2e["messages"] == 200 and _positive(e2e["per_s"]) and _positive(e2e["seconds"])
    assert e2e["service"]["batches"] >= 1
    latency = result["latency"]
    assert latency["messages"] >= 1 and _positive(latency["target_per_s"])
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert _positive(latency[key]), key
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    for key in ("e2e_over_seed", "e2e_over_model", "model_over_seed"):
        assert _positive(result["ratios"][key]), key
    scale = result["scale_out"]  # two members in one group shared the partitions and drained a second backlog
    assert scale["members"] == 2 and scale["messages"] == 200 and sorted(scale["split"]) == [2, 2]
    assert _positive(scale["per_s"]) and _positive(scale["over_one_member"])
    # each phase tells how the machine's CPU was shared while it was measured (/proc: Linux)
    assert {"broker", "service", "bench"} <= set(e2e["cpu_cores"]) and e2e["cpu_cores"]["service"] > 0
    assert {"broker", "steady_service", "bench"} <= set(latency["cpu_cores"])
    assert {"broker", "member1", "member2"} <= set(scale["cpu_cores"])
    table = markdown(result)  # the README's table, from the same JSON
    assert f"{e2e['per_s']:.1f}" in table and f"p99 {latency['p99_ms']} ms" in table and "(5) 2 members" in table


def test_bench_without_models_is_a_clear_error(tmp_path, capsys):
    assert run_bench(argparse.Namespace(json=True, n=10, model_dir=tmp_path)) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "train" in captured.err


def test_options_default_from_the_cli_namespace(tmp_path):
    options = BenchOptions.from_args(argparse.Namespace(json=False, n=6000, model_dir=tmp_path))
    assert options.n == 6000 and options.seed_texts > 0 and options.latency_s > 0


def test_texts_are_realistic_and_cycled():
    texts, source = load_texts()
    assert texts and all(t.strip() for t in texts) and source
    picked = pick(texts, len(texts) + 5, seed=0)
    assert len(picked) == len(texts) + 5 and pick(texts, 10, seed=0) == pick(texts, 10, seed=0)


TEXTS = ["i want a refund thanks", "my password is awful", "can you help me talk to an agent please",
         "track my order", "i have a complaint, this is terrible and i am furious", "great", "how do i track it"]


def test_fast_paths_give_the_plain_huggingface_logits(tiny_model_dir):
    """Pre-cast/pre-packed weights, one tokenization, token-length sorting: the same logits as the plain way."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model import TextClassifier

    for task in ("intent", "sentiment"):
        classifier = TextClassifier.load(tiny_model_dir / task, backend="torch")
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / task)
        network = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / task).eval()
        dtype = classifier.device.autocast_dtype
        for index in range(len(TEXTS)):  # one text at a time: no padding, so the plain way is unambiguous
            encoded = tokenizer([TEXTS[index]], truncation=True, max_length=classifier.max_length, return_tensors="pt")
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                expected = network(**encoded).logits.float().numpy()[0]
            np.testing.assert_allclose(classifier.logits([TEXTS[index]])[0], expected, rtol=1e-5, atol=1e-5)
        batched = classifier.logits(TEXTS, batch_size=3)  # sorted, padded per sub-batch, back in input order
        single = np.stack([classifier.logits([t])[0] for t in TEXTS])
        assert (batched.argmax(axis=1) == single.argmax(axis=1)).all()
        np.testing.assert_allclose(batched, single, atol=0.05)


def test_one_tokenization_serves_both_models_only_when_tokenizers_match(tiny_model_dir):
    from model import TriageModel
    from model.classifier import TextClassifier

    model = TriageModel.load(tiny_model_dir)
    assert model.shared_tokenizer
    assert model.intent.tokenizer_signature == model.sentiment.tokenizer_signature

    other = TextClassifier.load(tiny_model_dir / "sentiment")
    other.tokenizer.add_tokens(["refundz"])  # a different vocabulary: ids may differ
    assert other.tokenizer_signature != model.intent.tokenizer_signature
    assert not TriageModel(model.intent, other).shared_tokenizer


def test_side_by_side_and_one_after_the_other_predict_the_same(tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    from model import TriageModel

    model = TriageModel.load(tiny_model_dir)
    pool = model._pool or ThreadPoolExecutor(max_workers=1)
    model._pool = None
    sequential = model.predict(TEXTS)
    model._pool = pool
    assert model.predict(TEXTS) == sequential
