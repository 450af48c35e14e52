"""`triage evaluate --report`: a report a team lead reads, as markdown and HTML."""

from __future__ import annotations

import numpy as np

from training.evaluate import Scored
from training.metrics import classification_metrics
from training.render import (
    accuracy_by_length,
    reliability,
    worst_confusions,
    write_report,
)


def _scored():
    labels = ["cancel_order", "payment_issue", "track_order"]
    # payment_issue is read as cancel_order 3 times, track_order as payment_issue once
    gold = np.array([0] * 10 + [1] * 10 + [2] * 10)
    pred = gold.copy()
    pred[10:13] = 0
    pred[20] = 1
    probs = np.full((30, 3), 0.1)
    probs[np.arange(30), pred] = 0.8
    texts = ["cancel it"] * 10 + ["i cannot pay for order 12345 what do i do now"] * 10 + ["where is my order"] * 10
    return Scored(labels, probs, gold, classification_metrics(probs, gold, labels), tuple(texts))


def test_the_report_has_the_tables_and_pictures(tmp_path):
    scored = _scored()
    path = write_report(tmp_path, "intent: m on x.csv", scored, "x.csv", scored.texts)
    text = path.read_text()
    for heading in (
        "## Per label",
        "## The ten worst confusions",
        "## Confusion matrix",
        "## Calibration",
        "## Accuracy by text length",
    ):
        assert heading in text
    assert "| payment_issue | cancel_order | 3 | 30.0% |" in text
    assert "| track_order | payment_issue | 1 | 10.0% |" in text
    assert "| payment_issue | 0.875 | 0.700 |" in text  # precision 7/8 and recall 7/10 of the label
    assert "**0.8667**" in text  # accuracy 26/30
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and '<img alt="confusion matrix" src="confusion.png">' in html
    assert "cancel_order" in html and "http" not in html.replace("http-equiv", "")  # no external assets
    for picture in ("confusion.png", "reliability.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusions_reliability_and_length_bins():
    scored = _scored()
    from training.metrics import confusion

    pairs = worst_confusions(confusion(scored.probs, scored.gold, 3), scored.labels)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("payment_issue", "cancel_order", 3),
        ("track_order", "payment_issue", 1),
    ]
    bins = reliability(scored.probs, scored.gold)
    assert sum(b["n"] for b in bins) == 30 and len(bins) == 1  # every confidence is 0.8
    assert bins[0]["accuracy"] == round(26 / 30, 4)
    by_length = {r["words"]: r for r in accuracy_by_length(scored.texts, scored.probs, scored.gold)}
    assert by_length["1-3"]["n"] == 10 and by_length["1-3"]["accuracy"] == 1.0
    assert by_length["4-6"]["n"] == 10 and by_length["4-6"]["accuracy"] == 0.9
    assert by_length["11-15"]["n"] == 10 and by_length["11-15"]["accuracy"] == 0.7


def test_only_the_chosen_section_is_replaced():
    from training.report import replace_section

    lines = ["# Results", "", "Generated.", "", "## A", "old a", "", "## B", "old b", ""]
    assert replace_section(lines, ["## B", "new b"]) == [
        "# Results",
        "",
        "Generated.",
        "",
        "## A",
        "old a",
        "",
        "## B",
        "new b",
        "",
    ]
    assert replace_section(lines, ["## A", "new a"])[4:7] == ["## A", "new a", ""]
    assert replace_section(lines, ["## C", "c"])[-3:] == ["## C", "c", ""]
