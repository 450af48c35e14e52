"""Agents' corrections: joined with the routed events, versioned, added to training; bad ones counted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.fakes import enriched_event
from training.data import Inquiry
from training.errors import TrainingError
from training.feedback import Record, build_rows, intent_corrections, write_dataset
from training.intent import IntentSplit, add_corrections


def enriched(event_id: str, text: str, intent: str = "track_order") -> bytes:
    return enriched_event(event_id, text, intent)


ROUTED = [
    Record("auto", 0, 0, enriched("e1", "where is my parcel")),
    Record("auto", 0, 1, enriched("e2", "I was charged twice", "track_order")),
    Record("human", 0, 0, b"not an event at all"),
]


def _feedback(*values: bytes | None) -> list[Record]:
    return [Record("feedback", 0, offset, value) for offset, value in enumerate(values)]


def test_corrections_are_joined_with_what_the_service_said_and_the_last_one_wins():
    rows, rejected = build_rows(
        _feedback(
            b'{"event_id": "e2", "intent": "delivery_period"}',
            b'{"event_id": "e2", "intent": "payment_issue", "sentiment": "negative", "agent": "a-7"}',
            b'{"event_id": "e1", "reply_used": "It arrives on Monday."}',
        ),
        ROUTED,
    )
    assert not rejected
    by_id = {row["event_id"]: row for row in rows}
    assert by_id["e2"]["text"] == "I was charged twice" and by_id["e2"]["predicted_intent"] == "track_order"
    assert by_id["e2"]["intent"] == "payment_issue" and by_id["e2"]["sentiment"] == "negative"
    assert by_id["e2"]["model"] == {"intent": "intent-v1", "sentiment": "sentiment-v1"}
    assert by_id["e1"]["intent"] is None and by_id["e1"]["reply_used"] == "It arrives on Monday."


def test_bad_corrections_are_counted_by_reason_never_kept():
    rows, rejected = build_rows(
        _feedback(
            b"{not json",
            b"[1, 2]",
            b'{"intent": "payment_issue"}',
            b'{"event_id": "e1"}',
            b'{"event_id": "e1", "sentiment": "furious"}',
            b'{"event_id": "nobody", "intent": "payment_issue"}',
            None,
        ),
        ROUTED,
    )
    assert rows == []
    assert rejected == {
        "not_json": 2,
        "not_an_object": 1,
        "invalid:event_id": 1,
        "invalid:no_correction": 1,
        "invalid:sentiment": 1,
        "unknown_event_id": 1,
    }


def test_the_dataset_is_named_by_its_content(tmp_path):
    rows, rejected = build_rows(_feedback(b'{"event_id": "e1", "intent": "delivery_period"}'), ROUTED)
    first = write_dataset(tmp_path / "a", rows, rejected, {"feedback_topic": "feedback"})
    again = write_dataset(tmp_path / "b", rows, rejected, {"feedback_topic": "feedback"})
    assert first.version == again.version and first.path.name == f"{first.version}.jsonl"
    record = orjson.loads(first.path.with_suffix(".json").read_bytes())
    assert record["rows"] == 1 and record["intent_corrections"] == 1
    with pytest.raises(TrainingError, match="no correction could be joined"):
        write_dataset(tmp_path / "c", [], rejected, {})


def test_corrections_join_training_and_leave_validation(tmp_path):
    rows, rejected = build_rows(
        _feedback(
            b'{"event_id": "e1", "intent": "delivery_period"}',
            b'{"event_id": "e2", "sentiment": "negative"}',
        ),
        ROUTED,
    )
    path = write_dataset(tmp_path, rows, rejected, {}).path
    categories = {"delivery_period": "DELIVERY", "track_order": "ORDER"}
    assert intent_corrections(path, categories) == [
        Inquiry("where is my parcel", "delivery_period", "DELIVERY", source="feedback")
    ]
    split = IntentSplit(
        [Inquiry("track it", "track_order", "ORDER")],
        [
            Inquiry("Where is my  parcel", "track_order", "ORDER"),
            Inquiry("when will it come", "delivery_period", "DELIVERY"),
        ],
        "calibration",
        [],
    )
    merged = add_corrections(split, path, categories)
    assert [x.text for x in merged.train] == ["track it", "where is my parcel"]
    assert [x.text for x in merged.held_out] == ["when will it come"], "a corrected text is never validated on"
    assert merged.files[-1].rows == 1
    with pytest.raises(TrainingError, match="intents the taxonomy does not have: delivery_period"):
        intent_corrections(path, {"track_order": "ORDER"})


@pytest.mark.integration
@pytest.mark.slow
def test_feedback_collect_reads_the_topics_without_a_group(bootstrap_servers, topics, tmp_path, capsys):
    from tests.kafka_client import produce
    from triage.cli import main

    feedback_topic = topics["input_topic"] + ".feedback"
    produce(bootstrap_servers, topics["auto_topic"], [(b"k", value, []) for value in (r.value for r in ROUTED[:2])])
    produce(bootstrap_servers, topics["human_topic"], [(b"k", b"not an event", [])])
    produce(
        bootstrap_servers,
        feedback_topic,
        [
            (b"e2", b'{"event_id": "e2", "intent": "payment_issue"}', []),
            (b"x", b"{broken", []),
            (b"e9", b'{"event_id": "e9", "intent": "payment_issue"}', []),
        ],
    )
    argv = ["feedback", "collect", "--bootstrap-servers", bootstrap_servers, "--feedback-topic", feedback_topic]
    argv += ["--auto-topic", topics["auto_topic"], "--human-topic", topics["human_topic"], "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 corrected inquiries" in out and "not_json 1" in out and "unknown_event_id 1" in out
    (dataset,) = Path(tmp_path).glob("feedback-*.jsonl")
    (row,) = [orjson.loads(line) for line in dataset.read_bytes().splitlines()]
    assert row["event_id"] == "e2" and row["intent"] == "payment_issue" and row["text"] == "I was charged twice"


def test_sentiment_corrections_are_read_for_the_sentiment_model(tmp_path):
    from training.feedback import sentiment_corrections

    rows, rejected = build_rows(
        _feedback(b'{"event_id": "e2", "sentiment": "negative"}', b'{"event_id": "e1", "intent": "delivery_period"}'),
        ROUTED,
    )
    path = write_dataset(tmp_path, rows, rejected, {}).path
    assert sentiment_corrections(path) == [("I was charged twice", "negative")]
