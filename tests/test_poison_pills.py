"""Records that once stopped a partition: each is dead-lettered or routed with a reason, never raised."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from consumer.processor import Processor, Topics
from consumer.routing import RoutingPolicy
from schemas.deadletter import DeadLetterHeaders
from tests.fakes import FakeMessage, inquiry

TOPICS = Topics("out.auto", "out.human", "out.dlq")
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def nested(depth: int) -> bytes:
    return b'{"event_id": "deep", "text": "where is my order", "extra": ' + b"[" * depth + b"]" * depth + b"}"


class _BadHeaders(FakeMessage):
    def headers(self):  # what confluent-kafka does with a header name that is not UTF-8
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


@pytest.fixture()
def processor(tiny_model) -> Processor:
    return Processor(model=tiny_model, policy=RoutingPolicy.default(), topics=TOPICS, clock=lambda: NOW)


@pytest.mark.parametrize("depth", [300, 600, 1000])
def test_deep_nesting_is_a_dead_letter_not_a_crash(processor, depth):
    good = FakeMessage(inquiry("ok", "where is my refund"), _offset=1)
    deep = FakeMessage(nested(depth), _offset=2)
    records = processor.process([good, deep, good])
    assert [r.route for r in records][1] == "dlq" and records[0].route != "dlq" and records[2].route != "dlq"
    dead = DeadLetterHeaders.from_kafka(records[1].headers)
    assert dead.stage in ("encode", "decode") and dead.source_offset == 2
    assert records[1].value == deep.value()  # the original bytes, untouched


def test_integers_beyond_64_bits_are_a_dead_letter(processor):
    value = b'{"event_id": "big", "text": "cancel my order", "n": 123456789012345678901234567890}'
    records = processor.process([FakeMessage(value)])
    assert records[0].route == "dlq" and records[0].value == value


def test_unreadable_headers_are_dropped_and_the_record_still_routed(processor):
    records = processor.process([_BadHeaders(inquiry("h", "where is my order"))])
    assert records[0].route in ("auto_response", "human_agent") and records[0].headers == []
    dead = processor.process([_BadHeaders(b"not json")])[0]
    assert dead.route == "dlq" and DeadLetterHeaders.from_kafka(dead.headers).error_class == "InvalidJson"


def test_input_triage_headers_are_never_passed_on_as_ours(processor):
    forged = [
        ("triage.error.stage", b"inference"),
        ("Triage-Route", b"auto"),
        ("trace-id", b"t-9"),
        ("triage.source.offset", b"999"),
    ]
    message = FakeMessage(inquiry("f", "where is my order"), _headers=forged, _offset=5)
    routed = processor.process([message])[0]
    assert routed.headers == [("trace-id", b"t-9")]
    dead = processor.process([FakeMessage(b"nope", _headers=forged, _offset=6)])[0]
    assert [k for k, _ in dead.headers if k.lower().startswith("triage")].count("triage.source.offset") == 1
    assert DeadLetterHeaders.from_kafka(dead.headers).source_offset == 6


def test_an_input_that_already_has_a_triage_key_is_refused(processor):
    value = orjson.dumps({"event_id": "loop", "text": "where is my order", "triage": {"route": "auto_response"}})
    dead = processor.process([FakeMessage(value)])[0]
    assert dead.route == "dlq" and DeadLetterHeaders.from_kafka(dead.headers).error_class == "ReservedKey"


def test_a_text_of_zero_width_characters_goes_to_a_person_as_out_of_scope(processor):
    record = processor.process([FakeMessage(inquiry("z", "\u200b\u200b\u200d"))])[0]
    triage = orjson.loads(record.value)["triage"]
    assert record.route == "human_agent" and "out_of_scope" in triage["reasons"]
    assert triage["intent"]["out_of_scope"] == "no_words"
