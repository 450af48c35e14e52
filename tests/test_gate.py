"""The promotion gate: a worse retrained model is refused, an equal or better one is promoted manifest-last."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model.artifacts import read_manifest, write_manifest
from tests.tiny import worse_intent_copy, write_labelled_csv
from training.evaluate import Scored
from training.gate import compare
from training.metrics import classification_metrics
from triage.cli import main


def _scored(predicted: list[int], gold: list[int], labels: list[str]) -> Scored:
    probs = np.full((len(gold), len(labels)), 0.01, dtype=np.float32)
    probs[np.arange(len(gold)), predicted] = 1.0 - 0.01 * (len(labels) - 1)
    texts = tuple(f"t{i}" for i in range(len(gold)))
    return Scored(labels, probs, np.array(gold), classification_metrics(probs, np.array(gold), labels), texts)


def test_a_drop_on_one_intent_is_refused_even_when_the_total_holds():
    labels = ["a", "b", "c", "other"]
    gold = [0] * 40 + [1] * 40 + [2] * 20
    old = _scored(gold, gold, labels)
    # the new model gets every "a" and "b" right but loses a quarter of "c": accuracy only 0.05 lower
    new_predictions = gold[:80] + [2] * 15 + [3] * 5
    verdict = compare(old, _scored(new_predictions, gold, labels), margin=0.1, intent_margin=0.03)
    assert not verdict.accepted and verdict.reasons == [
        f"c F1 1.0000 -> {verdict.intents['c']['new']:.4f} (more than 0.03 worse)"
    ]
    assert compare(old, _scored(gold, gold, labels)).accepted


def test_a_lower_total_is_refused():
    labels = ["a", "b"]
    gold = [0, 1] * 50
    worse = [0, 1] * 45 + [1, 0] * 5
    verdict = compare(_scored(gold, gold, labels), _scored(worse, gold, labels), margin=0.005, intent_margin=1.0)
    assert not verdict.accepted and verdict.reasons[0].startswith("accuracy 1.0000 -> 0.9000")


@pytest.fixture
def eval_csv(tmp_path) -> Path:
    return write_labelled_csv(tmp_path / "eval.csv")


def test_the_gate_refuses_a_worse_model_and_promotes_a_good_one(tiny_model_dir, tmp_path, eval_csv, capsys):
    serving = Path(shutil.copytree(tiny_model_dir / "intent", tmp_path / "serving"))
    worse = worse_intent_copy(tiny_model_dir / "intent", tmp_path / "worse")
    args = ["evaluate", "intent", "--data", str(eval_csv), "--label-column", "label"]
    assert main([*args, "--compare", str(serving), str(worse), "--promote", str(serving)]) == 1
    out = capsys.readouterr().out
    assert "refused" in out and "get_refund F1" in out
    assert read_manifest(serving).version == "intent-tiny-test-0", "a refused model is never promoted"

    better = Path(shutil.copytree(tiny_model_dir / "intent", tmp_path / "retrained"))
    write_manifest(better, read_manifest(better).model_copy(update={"version": "intent-retrained"}))
    assert main([*args, "--compare", str(serving), str(better), "--promote", str(serving), "--json"]) == 0
    assert '"accepted": true' in capsys.readouterr().out
    assert read_manifest(serving).version == "intent-retrained"
    assert not list(serving.glob(".*.promoting")), "no half-copied file is left behind"


def test_promote_without_compare_is_a_usage_error(tmp_path, eval_csv, capsys):
    argv = ["evaluate", "intent", "--data", str(eval_csv), "--promote", str(tmp_path)]
    assert main(argv) == 2
    assert "--promote needs --compare" in capsys.readouterr().err
