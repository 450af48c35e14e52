"""Turns a batch of raw Kafka messages into output records: enriched events or dead letters.

Pure logic, no I/O: the runner hands it messages and publishes what it returns, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import orjson
from pydantic import ValidationError

from consumer.routing import RoutingPolicy
from model import InferenceError, Prediction, TriageModel
from schemas import InquiryEvent, Triage
from schemas.deadletter import DeadLetterHeaders, ErrorStage

Headers = list[tuple[str, bytes]]


class KafkaMessage(Protocol):
    """What the processor needs of a consumed message (confluent_kafka.Message fits)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


@dataclass(frozen=True)
class Topics:
    auto_response: str
    human_agent: str
    dlq: str

    def for_route(self, route: str) -> str:
        return self.auto_response if route == "auto_response" else self.human_agent


@dataclass
class OutputRecord:
    """One record to publish, with the input message it answers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    source: KafkaMessage
    route: str  # auto_response | human_agent | dlq
    intent: str | None = None
    error: str | None = None


@dataclass
class Rejection(Exception):
    """A record that cannot be triaged; becomes a dead letter."""

    stage: ErrorStage
    error_class: str
    message: str


@dataclass
class _Accepted:
    index: int
    payload: dict
    text: str
    prediction: Prediction | None = None
    rejection: Rejection | None = None


@dataclass
class Processor:
    model: TriageModel
    policy: RoutingPolicy
    topics: Topics
    max_text_chars: int = 10_000
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    def process(self, messages: Sequence[KafkaMessage]) -> list[OutputRecord]:
        """Decode, predict (isolating failing records), route; one output record per input, in order."""
        records: list[OutputRecord | None] = [None] * len(messages)
        accepted: list[_Accepted] = []
        for index, message in enumerate(messages):
            try:
                payload, text = decode(message.value(), self.max_text_chars)
            except Rejection as rejection:
                records[index] = self.dead_letter(message, rejection)
            else:
                accepted.append(_Accepted(index, payload, text))
        self._predict_isolating(accepted)
        processed_at = self.clock()
        for item in accepted:
            message = messages[item.index]
            if item.rejection is not None:
                records[item.index] = self.dead_letter(message, item.rejection)
            else:
                records[item.index] = self._enriched(message, item, processed_at)
        return [r for r in records if r is not None]

    def _predict_isolating(self, items: list[_Accepted]) -> None:
        """Predict a batch; when it fails, bisect so only the records that fail are rejected."""
        if not items:
            return
        try:
            predictions = self.model.predict([item.text for item in items])
        except InferenceError as exc:
            if len(items) == 1:
                items[0].rejection = Rejection("inference", type(exc).__name__, _short(str(exc)))
                return
            middle = len(items) // 2
            self._predict_isolating(items[:middle])
            self._predict_isolating(items[middle:])
            return
        for item, prediction in zip(items, predictions):
            item.prediction = prediction

    def _enriched(self, message: KafkaMessage, item: _Accepted, processed_at: datetime) -> OutputRecord:
        prediction = item.prediction
        assert prediction is not None
        route, reasons = self.policy.decide(prediction)
        triage = Triage.model_construct(
            intent=prediction.intent,
            sentiment=prediction.sentiment,
            route=route,
            reasons=reasons,
            model=self.model.versions,
            processed_at=processed_at,
        )
        payload = dict(item.payload)
        payload["triage"] = triage.model_dump(mode="json")
        return OutputRecord(
            topic=self.topics.for_route(route),
            key=message.key(),
            value=orjson.dumps(payload),
            headers=list(message.headers() or []),
            source=message,
            route=route,
            intent=prediction.intent.label,
        )

    def dead_letter(self, message: KafkaMessage, rejection: Rejection) -> OutputRecord:
        headers = DeadLetterHeaders(
            stage=rejection.stage,
            error_class=rejection.error_class,
            message=rejection.message,
            source_topic=message.topic() or "",
            source_partition=message.partition() if message.partition() is not None else -1,
            source_offset=message.offset() if message.offset() is not None else -1,
            failed_at=self.clock().isoformat(),
        )
        return OutputRecord(
            topic=self.topics.dlq,
            key=message.key(),
            value=message.value(),
            headers=list(message.headers() or []) + headers.to_kafka(),
            source=message,
            route="dlq",
            error=rejection.error_class,
        )


def decode(value: bytes | None, max_text_chars: int) -> tuple[dict, str]:
    """Parse and validate one message value; raise :class:`Rejection` saying why it is bad.

    Error messages name fields and error types only, never the inquiry's content.
    """
    if value is None:
        raise Rejection("decode", "NullValue", "message value is null (tombstone)")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection("decode", "InvalidUtf8", f"value is not valid UTF-8 at byte {exc.start}") from None
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Rejection("decode", "InvalidJson", f"value is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(payload, dict):
        raise Rejection("decode", "NotAnObject", f"value is a JSON {type(payload).__name__}, not an object")
    try:
        event = InquiryEvent.model_validate(payload)
    except ValidationError as exc:
        raise Rejection("validate", "SchemaError", _describe(exc)) from None
    if len(event.text) > max_text_chars:
        raise Rejection(
            "validate", "TextTooLong", f"text has {len(event.text)} characters, more than {max_text_chars}"
        )
    return payload, event.text


def _describe(exc: ValidationError) -> str:
    """Field locations and error types, without the offending input values."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{location}: {error['type']}")
    return _short("; ".join(parts))


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
