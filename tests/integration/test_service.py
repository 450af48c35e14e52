"""`triage run` as a real process against a real broker, driven by an independent client."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas import EnrichedEvent
from schemas.deadletter import DeadLetterHeaders
from tests.fakes import BAD_RECORDS
from tests.harness import TEXTS, Service, wait_for_topics
from tests.kafka_client import consume, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def committed(bootstrap: str, group_id: str, topic: str, partitions: list[int]) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        return {
            tp.partition: tp.offset
            for tp in probe.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        }
    finally:
        probe.close()


def end_offsets(bootstrap: str, topic: str, expected: int) -> dict[int, int]:
    """Next offset of each partition, read by the independent client."""
    ends: dict[int, int] = {}
    for record in consume(bootstrap, [topic], expected=expected, timeout_s=60, settle_s=1):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


def test_inquiries_in_enriched_events_out(bootstrap_servers, tiny_model_dir, topics, tmp_path):
    n = 500
    keys = [f"customer-{i % 12}".encode() for i in range(n)]
    good = [
        (
            keys[i],
            orjson.dumps(
                {
                    "event_id": f"ev-{i}",
                    "text": TEXTS[i % len(TEXTS)],
                    "seq": i,
                    "customer_id": keys[i].decode(),
                    "extra": {"i": i},
                }
            ),
            [("trace", b"%d" % i)],
        )
        for i in range(n)
    ]
    bad = [
        (f"bad-{kind}".encode(), value, [("kind", kind.encode())]) for kind, (value, _) in sorted(BAD_RECORDS.items())
    ]

    service = Service(bootstrap_servers, tiny_model_dir, topics, tmp_path / "service.log", batch_size=32)
    try:
        records = good[:60] + bad[:4] + good[60:] + bad[4:]
        out_topics = [topics["auto_topic"], topics["human_topic"], topics["dlq_topic"]]
        wait_for_topics(bootstrap_servers, [topics["input_topic"], *out_topics], service=service)
        produce(bootstrap_servers, topics["input_topic"], records)
        found = consume(
            bootstrap_servers, out_topics, expected=n + len(bad), timeout_s=180, abort=lambda: not service.alive()
        )
    finally:
        code = service.terminate()
    log = (tmp_path / "service.log").read_text()
    assert code == 0, log[-3000:]

    routed = [r for r in found if r.topic != topics["dlq_topic"]]
    letters = [r for r in found if r.topic == topics["dlq_topic"]]
    events = [EnrichedEvent.model_validate(orjson.loads(r.value)) for r in routed]
    ids = [e.event_id for e in events]
    assert sorted(ids) == sorted(f"ev-{i}" for i in range(n)), "every inquiry routed exactly once"
    for record, event in zip(routed, events):
        expected_topic = topics["auto_topic"] if event.triage.route == "auto_response" else topics["human_topic"]
        assert record.topic == expected_topic
        i = event.model_extra["seq"]
        assert record.key == keys[i] and ("trace", b"%d" % i) in record.headers
        assert event.model_extra["extra"] == {"i": i} and event.customer_id == keys[i].decode()
        assert len(event.triage.intent.top_k) >= 3 and event.triage.reasons
        assert event.triage.model.intent == "intent-tiny-test-0"
    assert {e.triage.route for e in events} == {"auto_response", "human_agent"}

    # order per key is kept on each output topic
    seqs = defaultdict(list)
    for record, event in zip(routed, events):
        seqs[(record.topic, record.partition, record.key)].append((record.offset, event.model_extra["seq"]))
    for values in seqs.values():
        assert [s for _, s in sorted(values)] == sorted(s for _, s in values)

    assert len(letters) == len(bad)
    by_key = {r.key: r for r in letters}
    for key, value, headers in bad:
        letter = by_key[key]
        assert letter.value == value and headers[0] in letter.headers
        parsed = DeadLetterHeaders.from_kafka(letter.headers)
        assert parsed.error_class == BAD_RECORDS[key.decode().removeprefix("bad-")][1]
        assert parsed.source_topic == topics["input_topic"] and parsed.source_offset >= 0

    ends = end_offsets(bootstrap_servers, topics["input_topic"], expected=n + len(bad))
    assert sum(ends.values()) == n + len(bad)
    assert committed(bootstrap_servers, topics["group_id"], topics["input_topic"], list(ends)) == ends
    batch_lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{") and '"batch"' in line]
    assert sum(line["size"] for line in batch_lines) == n + len(bad)
    assert not [text for text in TEXTS if text in log], "inquiry text is never logged"
