"""The int8 ONNX export of an artifact and the ONNX Runtime backend that runs it on CPU."""

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from model import ArtifactError, TextClassifier, TriageModel
from model.artifacts import read_manifest
from model.onnx import ONNX_FILE
from training.onnx_export import export_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = [
    "i want a refund thanks",
    "my password is awful",
    "can you help me talk to an agent please",
    "track my order",
    "i have a complaint, this is terrible and i am furious",
    "great",
    "how do i track it",
    "refund refund refund where is my money " * 8,
]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny artifacts, exported again on this module's probe texts."""
    root = tmp_path_factory.mktemp("onnx-artifacts")
    for task in ("intent", "sentiment"):
        shutil.copytree(tiny_model_dir / task, root / task)
        export_onnx(root / task, TEXTS)
    return root


def test_the_shared_test_artifacts_run_on_onnx_like_the_service(tiny_model):
    assert tiny_model.runtime == "cpu/onnx-int8"  # so every service test exercises the default CPU path


def _fp32_logits(directory, texts):
    network = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    classifier = TextClassifier.load(directory, backend="torch")
    with torch.inference_mode():
        return np.stack(
            [network(**classifier._pad([ids], len(ids))).logits[0].numpy() for ids in classifier.encode(texts)]
        )


def test_export_is_recorded_in_the_manifest_and_checked_against_the_original(exported, tiny_model_dir):
    for task in ("intent", "sentiment"):
        manifest = read_manifest(exported / task)
        assert manifest.onnx is not None and manifest.onnx.file == ONNX_FILE
        assert (exported / task / ONNX_FILE).is_file()
        assert manifest.onnx.probe_texts == len(TEXTS) and manifest.onnx.probe_agreement == 1.0
        assert manifest.version == read_manifest(tiny_model_dir / task).version  # the same model, run differently


def test_auto_backend_runs_the_export_and_matches_the_original(exported):
    for task in ("intent", "sentiment"):
        classifier = TextClassifier.load(exported / task)
        assert classifier.backend == "onnx-int8" and classifier.runtime == "cpu/onnx-int8"
        expected = _fp32_logits(exported / task, TEXTS)
        single = np.stack([classifier.logits([t])[0] for t in TEXTS])
        batched = classifier.logits(TEXTS, batch_size=3)  # sorted, padded per sub-batch, back in input order
        for got in (single, batched):
            assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
            np.testing.assert_allclose(got, expected, atol=0.25 * np.abs(expected).max())
        # activation ranges are measured per batch (dynamic quantisation): neighbours move logits a little
        np.testing.assert_allclose(batched, single, atol=0.05)


def test_torch_backend_can_be_forced(exported):
    classifier = TextClassifier.load(exported / "intent", backend="torch")
    assert classifier.backend == "torch" and classifier.backend_note is None


def test_triage_model_runs_both_exports_side_by_side(exported):
    from model.classifier import cpu_plan

    model = TriageModel.load(exported)
    assert model.runtime == "cpu/onnx-int8" and model.backend_notes == {}
    for classifier in (model.intent, model.sentiment):  # the CPU plan's threads reach ONNX Runtime
        assert classifier.network.session.get_session_options().intra_op_num_threads == cpu_plan().threads
    side_by_side = model.predict(TEXTS * 10)
    pool, model._pool = model._pool, None
    assert model.predict(TEXTS * 10) == side_by_side
    model._pool = pool


def test_a_gpu_never_runs_the_export(exported):
    from transformers import AutoTokenizer

    from model.classifier import DeviceChoice, _onnx_network

    manifest = read_manifest(exported / "intent")
    tokenizer = AutoTokenizer.from_pretrained(exported / "intent")
    network, note = _onnx_network(
        exported / "intent", manifest, DeviceChoice(torch.device("cuda"), None), tokenizer, None
    )
    assert network is None and "CPU" in note


def test_export_that_disagrees_with_the_original_is_refused(exported, tmp_path, monkeypatch):
    import training.onnx_export as onnx_module

    shutil.copytree(exported / "sentiment", tmp_path / "sentiment")
    before = (tmp_path / "sentiment" / "manifest.json").read_bytes()
    monkeypatch.setattr(onnx_module, "MIN_AGREEMENT", 1.01)  # nothing can agree on more than all texts
    with pytest.raises(ArtifactError, match="agrees with the original on only"):
        export_onnx(tmp_path / "sentiment", TEXTS)
    assert (tmp_path / "sentiment" / "manifest.json").read_bytes() == before


def test_an_export_added_to_the_running_version_is_a_reload(exported, tmp_path):
    from types import SimpleNamespace

    from consumer.reload import ModelReloader
    from consumer.settings import Settings
    from model.artifacts import write_manifest

    for task in ("intent", "sentiment"):
        shutil.copytree(exported / task, tmp_path / task)
        write_manifest(tmp_path / task, read_manifest(tmp_path / task).model_copy(update={"onnx": None}))
    running = TriageModel.load(tmp_path)
    assert running.runtime != "cpu/onnx-int8"
    reloader = ModelReloader(Settings(model_dir=tmp_path), SimpleNamespace(model=running), load=lambda: None)
    assert reloader._on_disk() == reloader._current()
    export_onnx(tmp_path / "intent", TEXTS)  # same version, now with its export
    assert reloader._on_disk() != reloader._current()
    reloader.close()


def test_export_made_from_other_weights_is_not_used(exported, tmp_path):
    shutil.copytree(exported / "intent", tmp_path / "intent")
    network = AutoModelForSequenceClassification.from_pretrained(tmp_path / "intent")
    with torch.no_grad():
        network.classifier.bias.add_(1.0)
    network.save_pretrained(tmp_path / "intent")  # new weights, the old export beside them
    classifier = TextClassifier.load(tmp_path / "intent")
    assert classifier.backend == "torch" and "other weights" in classifier.backend_note
    with pytest.raises(ArtifactError, match="other weights"):
        TextClassifier.load(tmp_path / "intent", backend="onnx")


def test_tampered_or_missing_export_is_not_used(exported, tmp_path):
    shutil.copytree(exported / "intent", tmp_path / "intent")
    path = tmp_path / "intent" / ONNX_FILE
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    assert "SHA-256" in TextClassifier.load(tmp_path / "intent").backend_note
    path.unlink()
    assert "missing" in TextClassifier.load(tmp_path / "intent").backend_note


def test_export_onnx_runtime_cannot_load_is_not_used(exported, tmp_path):
    import hashlib

    from model.artifacts import write_manifest

    shutil.copytree(exported / "intent", tmp_path / "intent")
    garbage = b"not an onnx model"
    (tmp_path / "intent" / ONNX_FILE).write_bytes(garbage)  # matching hash: only ONNX Runtime can tell
    manifest = read_manifest(tmp_path / "intent")
    onnx = manifest.onnx.model_copy(update={"sha256": hashlib.sha256(garbage).hexdigest()})
    write_manifest(tmp_path / "intent", manifest.model_copy(update={"onnx": onnx}))
    classifier = TextClassifier.load(tmp_path / "intent")
    assert classifier.backend == "torch" and "ONNX Runtime cannot load" in classifier.backend_note
    assert classifier.logits(TEXTS).shape == (len(TEXTS), len(classifier.labels))


def test_artifact_without_export_runs_on_torch_and_says_why(tiny_model_dir, tmp_path):
    from model.artifacts import write_manifest

    shutil.copytree(tiny_model_dir / "intent", tmp_path / "intent")
    (tmp_path / "intent" / ONNX_FILE).unlink()
    write_manifest(tmp_path / "intent", read_manifest(tmp_path / "intent").model_copy(update={"onnx": None}))
    classifier = TextClassifier.load(tmp_path / "intent")
    assert classifier.backend == "torch" and "no ONNX export" in classifier.backend_note
    with pytest.raises(ArtifactError, match="no ONNX export"):
        TextClassifier.load(tmp_path / "intent", backend="onnx")
    with pytest.raises(ValueError, match="backend"):
        TextClassifier.load(tmp_path / "intent", backend="tensorrt")


def test_export_onnx_command(tiny_model_dir, tmp_path, capsys):
    from model.artifacts import write_manifest
    from triage.cli import main

    shutil.copytree(tiny_model_dir / "sentiment", tmp_path / "sentiment")
    (tmp_path / "sentiment" / ONNX_FILE).unlink()
    write_manifest(tmp_path / "sentiment", read_manifest(tmp_path / "sentiment").model_copy(update={"onnx": None}))
    assert main(["export-onnx", str(tmp_path / "sentiment")]) == 0
    out = capsys.readouterr().out
    assert "model.int8.onnx" in out and "probe texts" in out
    assert read_manifest(tmp_path / "sentiment").onnx is not None


def _gold_of_the_original(directory, texts):
    return _fp32_logits(directory, texts).argmax(axis=1)


def test_feed_forward_blocks_are_found_by_weight_shape(tiny_model_dir, tmp_path):
    import onnx

    from training.onnx_export import feed_forward_nodes

    network = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "intent").eval()
    example = {
        "input_ids": torch.ones((1, 4), dtype=torch.long),
        "attention_mask": torch.ones((1, 4), dtype=torch.long),
    }
    path = tmp_path / "float.onnx"
    with torch.no_grad():
        torch.onnx.export(
            network,
            (),
            str(path),
            kwargs=example,
            input_names=list(example),
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    pairs = feed_forward_nodes(onnx.load(str(path)))
    assert len(pairs) == network.config.num_hidden_layers
    assert [("intermediate" in up, "output" in down) for up, down in pairs] == [(True, True)] * len(pairs)


def _int8_accuracy_moved_by(monkeypatch, points: float, times: int | None = None, f1_points: float = 0.0):
    """Make the export's own accuracy (not the float32 network's) ``points`` lower, the first ``times`` times.

    Its macro-F1 moves by ``f1_points``.
    """
    import training.onnx_export as onnx_module

    real, calls = onnx_module._check_scores, []

    def moved(network, *args, **kwargs):
        accuracy, macro_f1 = real(network, *args, **kwargs)
        if isinstance(network, onnx_module.OnnxNetwork):
            calls.append(1)
            if times is None or len(calls) <= times:
                return accuracy - points / 100, macro_f1 - f1_points / 100
        return accuracy, macro_f1

    monkeypatch.setattr(onnx_module, "_check_scores", moved)
    return calls


def test_export_records_its_accuracy_on_labelled_checks(exported, tmp_path):
    from training.onnx_export import AccuracyCheck, allowed_change

    shutil.copytree(exported / "intent", tmp_path / "intent")
    gold = _gold_of_the_original(tmp_path / "intent", TEXTS)  # the original scores 100% on its own answers
    export = export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("own-answers", TEXTS, gold)])
    check = export.accuracy_checks["own-answers"]
    assert check["n"] == len(TEXTS) and check["reference"] == 1.0
    assert abs(check["change"]) <= allowed_change(len(TEXTS)) and check["int8"] == 1.0 + check["change"] / 100
    assert read_manifest(tmp_path / "intent").onnx.accuracy_checks == export.accuracy_checks
    assert allowed_change(60) == pytest.approx(100 / 60) and allowed_change(4000) == 0.4


def test_export_keeps_feed_forward_matmuls_in_float_until_accuracy_holds(exported, tmp_path, monkeypatch):
    import onnx

    from training.onnx_export import AccuracyCheck

    shutil.copytree(exported / "intent", tmp_path / "intent")
    calls = _int8_accuracy_moved_by(monkeypatch, 50.0, times=1)  # the all-int8 variant only
    gold = _gold_of_the_original(tmp_path / "intent", TEXTS)
    export = export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("own-answers", TEXTS, gold)])
    assert export.float_matmuls == ("0.down",) and len(calls) == 2
    assert len(export.refused) == 1 and "accuracy on own-answers moved by -50.00 points" in export.refused[0]
    graph = onnx.load(str(tmp_path / "intent" / ONNX_FILE)).graph
    float_matmuls = {node.name for node in graph.node if node.op_type == "MatMul"}
    assert "/bert/encoder/layer.0/output/dense/MatMul" in float_matmuls  # the down-projection stays float
    assert "/bert/encoder/layer.0/intermediate/dense/MatMul" not in float_matmuls  # the up-projection is int8
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.node)  # the rest is int8
    # exported again without labels (`triage export-onnx`): what the checks kept in float stays in float
    assert export_onnx(tmp_path / "intent", TEXTS).float_matmuls == ("0.down",)


def test_the_up_projection_goes_float_after_the_down_projection(exported, tmp_path, monkeypatch):
    import onnx

    from training.onnx_export import AccuracyCheck

    shutil.copytree(exported / "intent", tmp_path / "intent")
    calls = _int8_accuracy_moved_by(monkeypatch, 50.0, times=2)  # all int8, then 0.down in float
    gold = _gold_of_the_original(tmp_path / "intent", TEXTS)
    export = export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("own-answers", TEXTS, gold)])
    assert export.float_matmuls == ("0.down", "0.up") and len(calls) == 3
    assert [r.split(":")[0] for r in export.refused] == ["int8 with no MatMul in float", "int8 with 0.down in float"]
    graph = onnx.load(str(tmp_path / "intent" / ONNX_FILE)).graph
    float_matmuls = {node.name for node in graph.node if node.op_type == "MatMul"}
    assert {
        "/bert/encoder/layer.0/intermediate/dense/MatMul",
        "/bert/encoder/layer.0/output/dense/MatMul",
    } <= float_matmuls


def test_float_ladder_takes_down_projections_first():
    from training.onnx_export import float_ladder

    assert float_ladder(0) == [()]
    assert float_ladder(2) == [
        (),
        ("0.down",),
        ("0.down", "1.down"),
        ("0.down", "1.down", "0.up"),
        ("0.down", "1.down", "0.up", "1.up"),
    ]


def test_an_older_manifests_float_layers_are_kept_by_a_reexport(exported, tmp_path):
    import json

    shutil.copytree(exported / "intent", tmp_path / "intent")
    path = tmp_path / "intent" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["onnx"].pop("float_matmuls")
    raw["onnx"]["float_feed_forward_layers"] = [0]  # as exports wrote it before float_matmuls
    path.write_text(json.dumps(raw))
    assert read_manifest(tmp_path / "intent").onnx.kept_in_float() == ("0.down", "0.up")
    assert export_onnx(tmp_path / "intent", TEXTS).float_matmuls == ("0.down", "0.up")
    assert "float_feed_forward_layers" not in json.loads(path.read_text())["onnx"]  # no longer written


def test_a_small_check_set_may_move_by_one_text_and_no_more(exported, tmp_path, monkeypatch):
    from training.onnx_export import AccuracyCheck

    shutil.copytree(exported / "intent", tmp_path / "intent")
    texts = (TEXTS * 8)[:60]
    gold = _gold_of_the_original(tmp_path / "intent", texts)
    _int8_accuracy_moved_by(monkeypatch, 100 / 60)  # one text of 60
    one = export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("sixty", texts, gold)])
    assert one.float_matmuls == () and one.accuracy_checks["sixty"]["change"] == -1.67
    monkeypatch.undo()
    _int8_accuracy_moved_by(monkeypatch, 200 / 60)  # two texts
    with pytest.raises(ArtifactError, match="accuracy on sixty moved by -3.33 points"):
        export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("sixty", texts, gold)])


def test_export_that_moves_accuracy_with_every_recipe_is_refused(exported, tmp_path, monkeypatch):
    from training.onnx_export import AccuracyCheck

    shutil.copytree(exported / "sentiment", tmp_path / "sentiment")
    before = (tmp_path / "sentiment" / "manifest.json").read_bytes()
    gold = _gold_of_the_original(tmp_path / "sentiment", TEXTS)
    _int8_accuracy_moved_by(monkeypatch, 50.0)  # every variant
    with pytest.raises(ArtifactError, match="no int8 export kept: .*accuracy on impossible moved by -50.00"):
        export_onnx(tmp_path / "sentiment", TEXTS, [AccuracyCheck("impossible", TEXTS, gold)])
    assert (tmp_path / "sentiment" / "manifest.json").read_bytes() == before


def test_export_that_holds_accuracy_but_moves_macro_f1_is_not_kept(exported, tmp_path, monkeypatch):
    from training.onnx_export import AccuracyCheck

    shutil.copytree(exported / "intent", tmp_path / "intent")
    texts = (TEXTS * 64)[:500]  # large enough for the macro-F1 rule: 0.4 points is two texts
    gold = _gold_of_the_original(tmp_path / "intent", texts)
    _int8_accuracy_moved_by(monkeypatch, 0.0, times=1, f1_points=1.0)
    export = export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("many", texts, gold)])
    assert export.float_matmuls == ("0.down",)
    assert "macro-F1 on many moved by -1.00 points" in export.refused[0]


def test_one_text_may_move_macro_f1_of_a_small_set_by_more_than_the_limit(exported, tmp_path, monkeypatch):
    """Below 500 texts accuracy allows one text, and one text of 295 moves macro-F1 by about 0.43 points."""
    from training.onnx_export import AccuracyCheck

    shutil.copytree(exported / "intent", tmp_path / "intent")
    texts = (TEXTS * 64)[:295]
    gold = _gold_of_the_original(tmp_path / "intent", texts)
    _int8_accuracy_moved_by(monkeypatch, 100 / 295, f1_points=0.43)
    export = export_onnx(tmp_path / "intent", TEXTS, [AccuracyCheck("small", texts, gold)])
    assert export.float_matmuls == () and export.refused == ()


def test_macro_f1_is_the_one_triage_evaluate_reports():
    from training.metrics import classification_metrics
    from training.onnx_export import macro_f1

    rng = np.random.default_rng(3)
    gold, predicted = rng.integers(0, 5, 300), rng.integers(0, 6, 300)  # class 5 is predicted, never gold
    probs = np.eye(6)[predicted]
    expected = classification_metrics(probs, gold, [str(i) for i in range(6)])["macro_f1"]
    assert macro_f1(predicted, gold) == pytest.approx(expected, abs=1e-4)
