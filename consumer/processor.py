"""Turns a batch of raw Kafka messages into output records: enriched events or dead letters.

Pure logic, no I/O: the runner hands it messages and publishes what it returns, in input order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from consumer.routing import RoutingPolicy
from model import InferenceError, Prediction, TriageModel
from schemas import InquiryEvent, SuggestedReply, Triage
from schemas.deadletter import DeadLetterHeaders, ErrorStage

#: headers as the service writes them; a header without a value keeps None
Headers = list[tuple[str, bytes | None]]
#: headers as confluent-kafka may hand them over (its ``HeadersType``)
RawHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]


class KafkaMessage(Protocol):
    """What the processor needs of a consumed message (confluent_kafka.Message fits)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> RawHeaders | None: ...
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
    reasons: tuple[str, ...] = ()
    #: what the shadow model (if any) would have said: its intent and route; never published
    shadow_intent: str | None = None
    shadow_route: str | None = None
    shadow_failed: bool = False


@dataclass
class Rejection(Exception):
    """A record that cannot be triaged; becomes a dead letter."""

    stage: ErrorStage
    error_class: str
    message: str


@dataclass
class _Accepted:
    index: int
    payload: dict[str, Any]
    text: str
    prediction: Prediction | None = None
    rejection: Rejection | None = None


@dataclass
class Processor:
    model: TriageModel
    policy: RoutingPolicy
    topics: Topics
    max_text_chars: int = 10_000
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: a candidate model run on the same texts for comparison only: it routes nothing, and its failures are
    #: counted, never dead-lettered
    shadow: TriageModel | None = None

    def process(self, messages: Sequence[KafkaMessage]) -> list[OutputRecord]:
        """Decode, predict (isolating failing records), route; one output record per input, in order."""
        records: list[OutputRecord | None] = [None] * len(messages)
        accepted: list[_Accepted] = []
        for index, message in enumerate(messages):
            try:
                payload, text = decode(message.value(), self.max_text_chars)
            except Rejection as rejection:
                records[index] = self.dead_letter(message, rejection)
            except Exception as exc:  # each record under its own guard: one record never stops the batch
                records[index] = self.dead_letter(message, Rejection("decode", type(exc).__name__, _short(str(exc))))
            else:
                accepted.append(_Accepted(index, payload, text))
        self._predict_isolating(accepted)
        shadows, shadow_failed = self._shadow_predict(accepted)
        processed_at = self.clock()
        for item in accepted:
            message = messages[item.index]
            if item.rejection is not None:
                records[item.index] = self.dead_letter(message, item.rejection)
                continue
            try:
                records[item.index] = self._enriched(message, item, processed_at)
                self._compare(records[item.index], shadows.get(item.index), shadow_failed)
            except Exception as exc:  # e.g. orjson cannot write a body nested deeper than 254 levels
                # the exception's text may quote the input; name the class and where it stopped only
                records[item.index] = self.dead_letter(
                    message,
                    Rejection(
                        "encode", type(exc).__name__, f"the enriched event cannot be written: {_short(str(exc), 120)}"
                    ),
                )
        return [r for r in records if r is not None]

    def _shadow_predict(self, items: list[_Accepted]) -> tuple[dict[int, Prediction], bool]:
        """The shadow model's predictions of the records the serving model classified, by record index, and whether
        it failed on this batch."""
        items = [item for item in items if item.rejection is None] if self.shadow is not None else []
        if self.shadow is None or not items:
            return {}, False
        try:
            predictions = self.shadow.predict([item.text for item in items])
        except Exception:  # the shadow model never affects what is published
            return {}, True
        return {item.index: prediction for item, prediction in zip(items, predictions)}, False

    def _compare(self, record: OutputRecord | None, shadow: Prediction | None, failed: bool) -> None:
        if record is None or self.shadow is None:
            return
        record.shadow_failed = failed
        if shadow is not None:
            record.shadow_intent = shadow.intent.label
            record.shadow_route = self.policy.decide(shadow)[0]

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
        reply = suggested_reply(self.model, item.text, prediction, route)
        triage = Triage.model_construct(
            intent=prediction.intent,
            sentiment=prediction.sentiment,
            route=route,
            reasons=reasons,
            model=self.model.versions,
            processed_at=processed_at,
            reply=reply,
        )
        payload = dict(item.payload)
        payload["triage"] = triage.model_dump(mode="json")
        return OutputRecord(
            topic=self.topics.for_route(route),
            key=message.key(),
            value=orjson.dumps(payload),
            headers=input_headers(message),
            source=message,
            route=route,
            intent=prediction.intent.label,
            reasons=tuple(reasons),
        )

    def dead_letter(self, message: KafkaMessage, rejection: Rejection) -> OutputRecord:
        partition, offset = message.partition(), message.offset()
        headers = DeadLetterHeaders(
            stage=rejection.stage,
            error_class=rejection.error_class,
            message=rejection.message,
            source_topic=message.topic() or "",
            source_partition=partition if partition is not None else -1,
            source_offset=offset if offset is not None else -1,
            failed_at=self.clock().isoformat(),
        )
        return OutputRecord(
            topic=self.topics.dlq,
            key=message.key(),
            value=message.value(),
            headers=[*input_headers(message), *headers.to_kafka()],
            source=message,
            route="dlq",
            error=rejection.error_class,
        )


#: the service's own header prefix: input headers under it are dropped, never passed on as ours
def suggested_reply(model: TriageModel, text: str, prediction: Prediction, route: str) -> SuggestedReply | None:
    """The reply an event carries: only what goes to auto_response gets one, from the model's reply library."""
    if route != "auto_response" or model.replies is None:
        return None
    return model.replies.suggest(text, prediction.intent.label)


OWN_HEADER_PREFIX = "triage"
#: the key the service writes its answer under; an input that already has it is refused (a replay of the
#: service's own output, or a loop between topics)
RESERVED_KEY = "triage"


def input_headers(message: KafkaMessage) -> Headers:
    """The input's headers that travel on, as (str, bytes): unreadable ones are dropped, and so are any named
    ``triage*`` (a producer must not be able to forge the service's own headers, e.g. a dead letter's)."""
    try:
        raw = message.headers() or []
    except Exception:  # e.g. a header name that is not UTF-8: confluent-kafka raises while decoding it
        return []
    out: Headers = []
    for item in raw.items() if isinstance(raw, dict) else raw:
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        if not isinstance(key, str) or key.lower().startswith(OWN_HEADER_PREFIX):
            continue
        if value is not None and not isinstance(value, bytes):
            value = str(value).encode("utf-8", errors="replace")
        out.append((key, value))
    return out


def decode(value: bytes | None, max_text_chars: int) -> tuple[dict[str, Any], str]:
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
    if _lost_integer(payload, value):
        raise Rejection(
            "decode",
            "NumberOutOfRange",
            "value holds an integer beyond 64 bits, which the JSON parser "
            "reads as an inexact float: publishing it would change the number",
        )
    if RESERVED_KEY in payload:
        raise Rejection(
            "validate",
            "ReservedKey",
            f"the {RESERVED_KEY!r} key is the service's own output; an input "
            "must not carry it (is an output topic being read back as input?)",
        )
    try:
        event = InquiryEvent.model_validate(payload)
    except ValidationError as exc:
        raise Rejection("validate", "SchemaError", _describe(exc)) from None
    if len(event.text) > max_text_chars:
        raise Rejection("validate", "TextTooLong", f"text has {len(event.text)} characters, more than {max_text_chars}")
    return payload, event.text


_LONG_INTEGER = re.compile(rb"(?<![\w.\"])-?\d{19,}(?![\d.eE])")


def _lost_integer(payload: dict[str, Any], raw: bytes) -> bool:
    """orjson reads an integer beyond 64 bits as a float: an integral float that large, with such a long run of
    digits in the raw bytes, was an integer the output would no longer carry exactly."""
    stack: list[Any] = [payload]
    found = False
    while stack and not found:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and abs(item) >= 2**63 and item.is_integer():
            found = True
    return found and _LONG_INTEGER.search(raw) is not None


def _describe(exc: ValidationError) -> str:
    """Field locations and error types, without the offending input values."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{location}: {error['type']}")
    return _short("; ".join(parts))


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
