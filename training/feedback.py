"""Agents' corrections as training data: `triage feedback collect` and `triage train intent --with-feedback`.

The feedback topic holds corrections by ``event_id``; the routing topics hold what the service said about each
inquiry (its text, intent, sentiment and model version). Collecting joins the two into a dataset file named by
its content hash (``feedback-<hash>.jsonl``, with a ``.json`` record of where it came from): the same topics
give the same file, and a retrained model's manifest names the exact file it learnt from. A correction never
reaches the serving model by itself: it is data for the next training, which the promotion gate then judges.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import EnrichedEvent
from schemas.feedback import Feedback
from training.data import Inquiry
from training.errors import TrainingError

FORMAT = 1


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def read_topics(config: dict[str, Any], topics: Iterable[str], timeout_s: float = 60.0) -> list[Record]:
    """Every record now in ``topics``, from the start of each partition to its end when the read began; no
    consumer group is joined and no offset is committed, so the service's own offsets are never touched."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            **config,
            "group.id": f"triage-feedback-collect-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        assignment, ends = [], {}
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise TrainingError(f"topic {topic} does not exist on {config.get('bootstrap.servers')}")
            for partition in found.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                if high > low:
                    ends[(topic, partition)] = high
                    assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        records: list[Record] = []
        if not assignment:
            return records
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TrainingError(f"timed out reading {', '.join(sorted({t for t, _ in ends}))}")
            for message in consumer.consume(500, 1.0):
                if message.error() is not None:
                    continue
                name, partition, offset = message.topic(), message.partition(), message.offset()
                if name is None or partition is None or offset is None:
                    continue
                records.append(Record(name, partition, offset, message.value()))
                if offset + 1 >= ends.get((name, partition), 0):
                    ends.pop((name, partition), None)
            # a transaction's commit marker takes the last offset of a partition but is never returned
            for tp in consumer.position([TopicPartition(t, p) for t, p in ends]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    ends.pop((tp.topic, tp.partition), None)
        return records
    except KafkaException as exc:
        raise TrainingError(f"cannot read from Kafka: {exc}") from exc
    finally:
        consumer.close()


def build_rows(feedback: list[Record], routed: list[Record]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """One row per corrected inquiry (the last correction of an ``event_id`` wins), joined with what the service
    said about it; rejected corrections counted by reason (a reason names what was wrong, never the text)."""
    events: dict[str, EnrichedEvent] = {}
    for record in routed:
        try:
            event = EnrichedEvent.model_validate_json(record.value or b"")
        except ValidationError:
            continue  # not an enriched event: the topic is shared or older
        events[event.event_id] = event
    rejected: Counter[str] = Counter()
    latest: dict[str, tuple[Record, Feedback]] = {}
    for record in sorted(feedback, key=lambda r: (r.partition, r.offset)):
        try:
            correction = Feedback.model_validate_json(record.value or b"")
        except ValidationError as exc:
            rejected[_reason(exc)] += 1
            continue
        if correction.event_id not in events:
            rejected["unknown_event_id"] += 1
            continue
        latest[correction.event_id] = (record, correction)
    rows = []
    for event_id, (record, correction) in sorted(latest.items()):
        event = events[event_id]
        rows.append(
            {
                "event_id": event_id,
                "text": event.text,
                "intent": correction.intent,
                "sentiment": correction.sentiment,
                "reply_used": correction.reply_used,
                "predicted_intent": event.triage.intent.label,
                "predicted_sentiment": event.triage.sentiment.label,
                "model": event.triage.model.model_dump(),
                "feedback_offset": [record.partition, record.offset],
            }
        )
    return rows, rejected


def _reason(exc: ValidationError) -> str:
    errors = exc.errors()
    if errors and errors[0]["type"] in ("json_invalid", "json_type"):
        return "not_json"
    if errors and errors[0]["type"] == "model_type":
        return "not_an_object"
    fields = sorted({str(error["loc"][0]) for error in errors if error.get("loc")})
    return "invalid:" + ",".join(fields) if fields else "invalid:no_correction"


@dataclass(frozen=True)
class Collected:
    path: Path
    rows: int
    rejected: dict[str, int]
    version: str


def write_dataset(
    directory: Path, rows: list[dict[str, Any]], rejected: Counter[str], source: dict[str, Any]
) -> Collected:
    """``feedback-<hash>.jsonl`` and its ``.json`` record in ``directory``; the hash is of the rows."""
    if not rows:
        raise TrainingError(f"no correction could be joined with a routed inquiry (rejected: {dict(rejected) or 0})")
    body = b"".join(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n" for row in rows)
    version = "feedback-" + hashlib.sha256(body).hexdigest()[:12]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{version}.jsonl"
    path.write_bytes(body)
    record = {
        "format": FORMAT,
        "version": version,
        "rows": len(rows),
        "intent_corrections": sum(row["intent"] is not None for row in rows),
        "sentiment_corrections": sum(row["sentiment"] is not None for row in rows),
        "rejected": dict(sorted(rejected.items())),
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
    }
    path.with_suffix(".json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return Collected(path, len(rows), dict(rejected), version)


def collect(
    config: dict[str, Any], feedback_topic: str, routed_topics: list[str], directory: Path, timeout_s: float = 60.0
) -> Collected:
    feedback = read_topics(config, [feedback_topic], timeout_s)
    routed = read_topics(config, routed_topics, timeout_s)
    rows, rejected = build_rows(feedback, routed)
    source = {"feedback_topic": feedback_topic, "feedback_records": len(feedback), "routed_topics": routed_topics}
    return write_dataset(directory, rows, rejected, source)


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        rows = [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TrainingError(f"cannot read the feedback dataset {path}: {exc}") from exc
    return [row for row in rows if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip()]


def sentiment_corrections(path: Path) -> list[tuple[str, str]]:
    """(text, sentiment) of the sentiment corrections of a collected dataset."""
    labels = ("negative", "neutral", "positive")
    return [(" ".join(row["text"].split()), row["sentiment"]) for row in _rows(path) if row.get("sentiment") in labels]


def intent_corrections(path: Path, categories: dict[str, str]) -> list[Inquiry]:
    """The intent corrections of a collected dataset as training inquiries; an intent outside ``categories`` (the
    model's taxonomy) is refused, since a model cannot learn a label it has no place for."""
    corrected = [row for row in _rows(path) if row.get("intent")]
    unknown = sorted({row["intent"] for row in corrected} - set(categories))
    if unknown:
        raise TrainingError(
            f"{path}: corrections to intents the taxonomy does not have: {', '.join(unknown)} (train on data that "
            "has them, or fix the corrections)"
        )
    return [
        Inquiry(" ".join(row["text"].split()), row["intent"], categories[row["intent"]], source="feedback")
        for row in corrected
    ]
