"""The int8 ONNX export of an artifact and the ONNX Runtime backend that runs it on CPU."""

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from model import ArtifactError, TextClassifier, TriageModel
from model.artifacts import read_manifest
from model.onnx import ONNX_FILE, export_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = ["i want a refund thanks", "my password is awful", "can you help me talk to an agent please",
         "track my order", "i have a complaint, this is terrible and i am furious", "great", "how do i track it",
         "refund refund refund where is my money " * 8]


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
        return np.stack([network(**classifier._pad([ids], len(ids))).logits[0].numpy()
                         for ids in classifier.encode(texts)])


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
    model = TriageModel.load(exported)
    assert model.runtime == "cpu/onnx-int8"
    reference = TriageModel.load(exported, backend="torch").predict(TEXTS)
    got = model.predict(TEXTS * 10)
    assert [p.intent.label for p in got[: len(TEXTS)]] == [p.intent.label for p in reference]
    assert [p.sentiment.label for p in got[: len(TEXTS)]] == [p.sentiment.label for p in reference]


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
    from consumer.cli import main

    shutil.copytree(tiny_model_dir / "sentiment", tmp_path / "sentiment")
    assert main(["export-onnx", str(tmp_path / "sentiment")]) == 0
    out = capsys.readouterr().out
    assert "model.int8.onnx" in out and "probe texts" in out
    assert read_manifest(tmp_path / "sentiment").onnx is not None
