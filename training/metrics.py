"""Classification metrics shared by training and ``triage evaluate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from training.calibration import expected_calibration_error


def classification_metrics(
    probs: NDArray[np.floating], gold: NDArray[np.integer], labels: Sequence[str]
) -> dict[str, Any]:
    """accuracy, macro_f1, per_class {label: precision/recall/f1/support}, n, ece (15 bins)."""
    gold = np.asarray(gold)
    pred = np.asarray(probs).argmax(axis=1)
    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=ids, zero_division=0)
    present = s > 0
    return {
        "accuracy": round(float((pred == gold).mean()) if len(gold) else 0.0, 4),
        "macro_f1": round(float(f[present].mean()) if present.any() else 0.0, 4),
        "per_class": {
            label: {
                "precision": round(float(p[i]), 4),
                "recall": round(float(r[i]), 4),
                "f1": round(float(f[i]), 4),
                "support": int(s[i]),
            }
            for i, label in enumerate(labels)
        },
        "n": int(len(gold)),
        "ece": round(expected_calibration_error(probs, gold), 4),
    }


def confusion(probs: NDArray[np.floating], gold: NDArray[np.integer], n_labels: int) -> NDArray[np.int64]:
    matrix: NDArray[np.int64] = confusion_matrix(gold, np.asarray(probs).argmax(axis=1), labels=list(range(n_labels)))
    return matrix


def summary(metrics: dict[str, Any], classes: Sequence[str] = ()) -> dict[str, Any]:
    """accuracy, macro-F1, ECE, n and the recall of ``classes``: the numbers the README shows."""
    out = {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "n")}
    for name in classes:
        out[f"{name}_recall"] = metrics["per_class"][name]["recall"]
    return out
