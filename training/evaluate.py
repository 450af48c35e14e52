"""``triage evaluate``: score an artifact on any labelled CSV through the runtime's TextClassifier."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training.errors import TrainingError
from training.metrics import classification_metrics

if TYPE_CHECKING:
    from model.classifier import TextClassifier


class EvaluationError(TrainingError):
    """Bad evaluation input (missing column, unknown labels, wrong task); the CLI exits with code 2."""


@dataclass(frozen=True)
class Scored:
    labels: list[str]
    probs: NDArray[np.floating]
    gold: NDArray[np.integer]
    metrics: dict[str, Any]
    texts: tuple[str, ...] = ()


def read_labelled_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV with a header row (a UTF-8 BOM is fine)."""
    path = Path(path)
    if path.is_dir():
        raise EvaluationError(f"{path} is a directory, not a CSV file")
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise EvaluationError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}, line {line}); save it as UTF-8"
        ) from exc
    rows = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise EvaluationError(f"{path} is empty: expected a header row and labelled rows")
        missing = [c for c in (text_column, label_column) if c not in reader.fieldnames]
        if missing:
            raise EvaluationError(
                f"{path}: missing column(s) {missing}; columns are {reader.fieldnames} "
                "(--text-column and --label-column name them)"
            )
        twice = sorted({c for c in (text_column, label_column) if reader.fieldnames.count(c) > 1})
        if twice:
            raise EvaluationError(f"{path}: column(s) {twice} appear more than once in the header")
        first_line = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
        for row in reader:
            if None in row or row[text_column] is None or row[label_column] is None:
                fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or ())
                raise EvaluationError(
                    f"{path}, line {first_line}: {fields} field{'s' * (fields != 1)} where the "
                    f"header has {len(reader.fieldnames)} (a missing comma or an unclosed quote?)"
                )
            rows.append((row[text_column], row[label_column].strip()))
            first_line = reader.line_num + 1
    except csv.Error as exc:
        raise EvaluationError(f"{path}: not a readable CSV ({exc})") from exc
    if not rows:
        raise EvaluationError(f"{path}: no rows")
    return [t for t, _ in rows], [y for _, y in rows]


def gold_ids(labels: Sequence[str], known: Sequence[str]) -> NDArray[np.int64]:
    """Label names -> model ids; unknown names raise EvaluationError naming them."""
    index = {label: i for i, label in enumerate(known)}
    unknown = sorted({y for y in labels if y not in index})
    if unknown:
        raise EvaluationError(f"labels the model does not know: {unknown}; the model's labels are {list(known)}")
    return np.array([index[y] for y in labels])


def load_classifier(model_dir: Path, task: str, backend: str = "auto") -> TextClassifier:
    """The runtime's TextClassifier for ``model_dir`` (run as the service runs it), checked to be a ``task`` model."""
    from model.classifier import TextClassifier
    from model.errors import ArtifactError

    try:
        classifier = TextClassifier.load(model_dir, backend=backend)
    except ArtifactError as exc:
        raise EvaluationError(str(exc)) from exc
    if classifier.manifest.task != task:
        raise EvaluationError(
            f"{model_dir} holds the {classifier.manifest.task} model; "
            f"score it with `triage evaluate {classifier.manifest.task}`"
        )
    return classifier


def score(
    classifier: TextClassifier, texts: Sequence[str], labels: Sequence[str], batch_size: int | None = None
) -> Scored:
    """Calibrated probabilities and metrics of ``classifier`` on (texts, labels).

    ``batch_size`` is the most texts per forward pass; by default the service's (16 on CPU, 256 on GPU), since the int8
    export's scores move slightly with the texts sharing a pass.
    """
    from model.predictor import default_pass_size

    known = list(classifier.labels)
    gold = gold_ids(labels, known)
    probs = classifier.predict_proba(list(texts), batch_size=batch_size or default_pass_size(classifier))
    return Scored(known, probs, gold, classification_metrics(probs, gold, known), tuple(texts))


def evaluate_csv(
    task: str,
    model_dir: Path,
    csv_path: Path,
    text_column: str,
    label_column: str,
    batch_size: int | None = None,
    backend: str = "auto",
) -> Scored:
    texts, labels = read_labelled_csv(csv_path, text_column, label_column)
    classifier = load_classifier(model_dir, task, backend)
    gold_ids(labels, classifier.labels)  # fail before running the model
    return score(classifier, texts, labels, batch_size)
