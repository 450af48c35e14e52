"""ECE and temperature scaling on synthetic data."""

import numpy as np

from training.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from training.metrics import classification_metrics


def _synthetic(n=4000, classes=3, scale=4.0, seed=0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, classes)) * 1.5
    labels = np.array([rng.choice(classes, p=p) for p in softmax(true_logits)])
    return true_logits * scale, labels  # overconfident by a factor of ``scale``


def test_ece_perfect_and_worst():
    labels = np.array([0, 1, 2, 0])
    assert expected_calibration_error(np.eye(3)[labels], labels) == 0.0
    assert abs(expected_calibration_error(np.eye(3)[(labels + 1) % 3], labels) - 1.0) < 1e-9


def test_temperature_recovers_scale():
    logits, labels = _synthetic()
    temperature = fit_temperature(logits, labels)
    assert 3.0 < temperature < 5.3
    report = calibration_report(logits, labels, temperature)
    assert report["ece_after"] < report["ece_before"]
    assert report["bins"] == 15


def test_metrics_keys():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    metrics = classification_metrics(probs, np.array([0, 1, 1]), ["a", "b"])
    assert set(metrics) == {"accuracy", "macro_f1", "per_class", "n", "ece"}
    assert metrics["per_class"]["b"]["recall"] == 0.5
    assert metrics["n"] == 3
