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
