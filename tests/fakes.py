"""Test doubles for Kafka messages (the processor only needs their accessors)."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass
class FakeMessage:
    _value: bytes | None
    _key: bytes | None = b"k"
    _headers: list[tuple[str, bytes]] | None = field(default_factory=lambda: [("trace-id", b"t-1")])
    _topic: str = "inquiries"
    _partition: int = 0
    _offset: int = 0

    def value(self):
        return self._value

    def key(self):
        return self._key

    def headers(self):
        return self._headers

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def error(self):
        return None

    def timestamp(self):
        return 0, -1  # TIMESTAMP_NOT_AVAILABLE


def inquiry(event_id: str, text: str, **extra) -> bytes:
    return orjson.dumps({"event_id": event_id, "text": text, **extra})


# Every kind of bad record the service must dead-letter, with the error class it must report.
BAD_RECORDS: dict[str, tuple[bytes | None, str]] = {
    "not_json": (b"this is not json {", "InvalidJson"),
    "not_object": (b'["a", "list"]', "NotAnObject"),
    "missing_text": (b'{"event_id": "b-1"}', "SchemaError"),
    "empty_text": (b'{"event_id": "b-2", "text": "   "}', "SchemaError"),
    "wrong_types": (b'{"event_id": 42, "text": ["not", "a", "string"]}', "SchemaError"),
    "invalid_utf8": (b'{"event_id": "b-3", "text": "caf\xc3\x28"}', "InvalidUtf8"),
    "null_value": (None, "NullValue"),
    "too_long": (orjson.dumps({"event_id": "b-4", "text": "refund " * 3000}), "TextTooLong"),
}


def enriched_event(
    event_id: str, text: str | None = None, intent: str = "track_order", route: str = "auto_response"
) -> bytes:
    """A routed event as the service publishes it (valid against schemas.EnrichedEvent)."""
    from datetime import UTC, datetime

    from schemas import EnrichedEvent

    event = {
        "event_id": event_id,
        "text": text or f"secret text of {event_id}",
        "triage": {
            "intent": {
                "label": intent,
                "category": "ORDER",
                "confidence": 0.8,
                "top_k": [{"label": intent, "score": 0.8}],
            },
            "sentiment": {
                "label": "neutral",
                "score": 0.9,
                "scores": {"negative": 0.05, "neutral": 0.9, "positive": 0.05},
            },
            "route": route,
            "reasons": ["automatable_intent"],
            "model": {"intent": "intent-v1", "sentiment": "sentiment-v1"},
            "processed_at": datetime(2026, 12, 6, tzinfo=UTC).isoformat(),
        },
    }
    return EnrichedEvent.model_validate(event).model_dump_json().encode()
