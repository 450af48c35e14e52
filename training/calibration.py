"""Temperature scaling and expected calibration error."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from model.classifier import softmax as runtime_softmax


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.floating]:
    """The runtime's softmax (:func:`model.classifier.softmax`), so training scores what the service computes."""
    return runtime_softmax(np.asarray(logits), temperature)


def expected_calibration_error(probs: NDArray[np.floating], labels: NDArray[np.integer], bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    which = confidence_bins(confidence, bins)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def confidence_bins(confidence: NDArray[np.floating], bins: int = 15) -> NDArray[np.intp]:
    """The equal-width bin (0 .. bins-1) of each confidence: the bins of the ECE and the reliability diagram."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which: NDArray[np.intp] = np.digitize(confidence, edges[1:-1], right=True)
    return np.clip(which, 0, bins - 1)


def fit_temperature(logits: NDArray[np.floating], labels: NDArray[np.integer], max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (LBFGS on log T)."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward has no annotations
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch's LBFGS.step has no annotations
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def calibration_report(
    logits: NDArray[np.floating], labels: NDArray[np.integer], temperature: float, bins: int = 15
) -> dict[str, Any]:
    """ECE before (T=1) and after temperature scaling."""
    return {
        "ece_before": round(expected_calibration_error(softmax(logits), labels, bins), 4),
        "ece_after": round(expected_calibration_error(softmax(logits, temperature), labels, bins), 4),
        "bins": bins,
        "n": int(len(labels)),
    }
