"""``triage evaluate``: score an artifact on any labelled CSV through the runtime's TextClassifier."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.metrics import classification_metrics


class EvaluationError(Exception):
    """Bad evaluation input (missing column, unknown labels, wrong task); the CLI exits with code 2."""


@dataclass(frozen=True)
class Scored:
    labels: list[str]
    probs: np.ndarray
    gold: np.ndarray
    metrics: dict


def read_labelled_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV with a header row (a UTF-8 BOM is fine)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise EvaluationError(f"{path}: missing column(s) {missing}; columns are {reader.fieldnames}")
        rows = [(r[text_column] or "", (r[label_column] or "").strip()) for r in reader]
    if not rows:
        raise EvaluationError(f"{path}: no rows")
    return [t for t, _ in rows], [y for _, y in rows]


def gold_ids(labels: Sequence[str], known: Sequence[str]) -> np.ndarray:
    """Label names -> model ids; unknown names raise EvaluationError naming them."""
    index = {label: i for i, label in enumerate(known)}
    unknown = sorted({y for y in labels if y not in index})
    if unknown:
        raise EvaluationError(f"labels the model does not know: {unknown}; the model's labels are {list(known)}")
    return np.array([index[y] for y in labels])


def load_classifier(model_dir: Path, task: str, backend: str = "auto"):
    """The runtime's TextClassifier for ``model_dir`` (run as the service runs it), checked to be a ``task`` model."""
    from model.classifier import TextClassifier
    from model.errors import ArtifactError

    try:
        classifier = TextClassifier.load(model_dir, backend=backend)
    except ArtifactError as exc:
        raise EvaluationError(str(exc)) from exc
    if classifier.manifest.task != task:
        raise EvaluationError(f"{model_dir} is a {classifier.manifest.task} model, not {task}")
    return classifier


def score(classifier, texts: Sequence[str], labels: Sequence[str], batch_size: int | None = None) -> Scored:
    """Calibrated probabilities and metrics of ``classifier`` on (texts, labels).

    ``batch_size`` is the most texts per forward pass; by default the service's (16 on CPU, 256 on GPU), since the int8
    export's scores move slightly with the texts sharing a pass.
    """
    from model.predictor import default_pass_size

    known = list(classifier.labels)
    gold = gold_ids(labels, known)
    probs = classifier.predict_proba(list(texts), batch_size=batch_size or default_pass_size(classifier))
    return Scored(known, probs, gold, classification_metrics(probs, gold, known))


def evaluate_csv(task: str, model_dir: Path, csv_path: Path, text_column: str, label_column: str,
                 batch_size: int | None = None, backend: str = "auto") -> Scored:
    texts, labels = read_labelled_csv(csv_path, text_column, label_column)
    classifier = load_classifier(model_dir, task, backend)
    gold_ids(labels, classifier.labels)  # fail before running the model
    return score(classifier, texts, labels, batch_size)
