from datetime import UTC, datetime

import orjson
import pytest

from consumer.processor import Processor, Rejection, Topics, decode
from consumer.routing import RoutingPolicy
from model import InferenceError
from schemas import EnrichedEvent
from schemas.deadletter import DeadLetterHeaders
from tests.fakes import BAD_RECORDS, FakeMessage, inquiry

TOPICS = Topics("out.auto", "out.human", "out.dlq")
POLICY = RoutingPolicy(
    human_intents=frozenset({"contact_human_agent", "complaint"}), negative_threshold=0.6, abstain_threshold=0.5
)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def make_processor(model) -> Processor:
    return Processor(model=model, policy=POLICY, topics=TOPICS, max_text_chars=10_000, clock=lambda: NOW)


def test_good_inquiries_are_enriched_routed_and_passed_through(tiny_model):
    messages = [
        FakeMessage(
            inquiry(
                "e-1",
                "i want my refund please",
                customer_id="c1",
                channel="chat",
                created_at="2026-11-26T10:00:00Z",
                language="en",
                custom={"vip": True},
            ),
            _offset=10,
        ),
        FakeMessage(inquiry("e-2", "can you help me talk to an agent"), _key=b"c2", _offset=11),
        FakeMessage(inquiry("e-3", "my password is terrible and i am furious"), _key=None, _offset=12),
    ]
    records = make_processor(tiny_model).process(messages)
    assert [r.source.offset() for r in records] == [10, 11, 12]
    by_id = {orjson.loads(r.value)["event_id"]: r for r in records}

    refund = orjson.loads(by_id["e-1"].value)
    assert refund["custom"] == {"vip": True} and refund["created_at"] == "2026-11-26T10:00:00Z"
    event = EnrichedEvent.model_validate(refund)
    assert event.triage.intent.label == "get_refund"
    assert event.triage.intent.category == "REFUND"
    assert len(event.triage.intent.top_k) == 3
    assert event.triage.route == "auto_response" and by_id["e-1"].topic == "out.auto"
    assert event.triage.reasons == ["automatable_intent"]
    assert event.triage.model.intent == "intent-tiny-test-0"
    assert event.triage.processed_at == NOW
    assert set(event.triage.sentiment.scores) == {"negative", "neutral", "positive"}
    assert by_id["e-1"].key == b"k" and by_id["e-1"].headers == [("trace-id", b"t-1")]

    agent = orjson.loads(by_id["e-2"].value)["triage"]
    assert agent["route"] == "human_agent" and "intent_needs_human" in agent["reasons"]
    assert by_id["e-2"].topic == "out.human" and by_id["e-2"].key == b"c2"

    angry = orjson.loads(by_id["e-3"].value)["triage"]
    assert angry["sentiment"]["label"] == "negative"
    assert angry["route"] == "human_agent" and "negative_sentiment" in angry["reasons"]
    assert by_id["e-3"].key is None


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_every_bad_record_kind_is_dead_lettered_untouched(tiny_model, kind):
    value, error_class = BAD_RECORDS[kind]
    message = FakeMessage(value, _key=b"key-" + kind.encode(), _partition=2, _offset=77)
    good = FakeMessage(inquiry("ok", "track my order thanks"), _offset=78)
    records = make_processor(tiny_model).process([message, good])
    assert len(records) == 2
    letter, routed = records
    assert letter.topic == "out.dlq" and letter.route == "dlq"
    assert letter.value == value and letter.key == b"key-" + kind.encode()
    assert letter.headers[0] == ("trace-id", b"t-1")  # original headers first
    headers = DeadLetterHeaders.from_kafka(letter.headers)
    assert headers.error_class == error_class
    assert (headers.source_topic, headers.source_partition, headers.source_offset) == ("inquiries", 2, 77)
    assert "refund" not in headers.message and "caf" not in headers.message  # never the inquiry text
    assert routed.topic == "out.auto"


def test_unknown_fields_pass_through_and_an_existing_triage_key_is_refused(tiny_model):
    value = inquiry("e-9", "track my order thanks", nested={"a": [1, 2.5, None]})
    record = make_processor(tiny_model).process([FakeMessage(value)])[0]
    payload = orjson.loads(record.value)
    assert payload["nested"] == {"a": [1, 2.5, None]}
    assert isinstance(payload["triage"], dict)
    # the triage key is the service's own: overwriting a client's would lose it, reading our output back loops
    clash = inquiry("e-10", "track my order thanks", triage="client supplied")
    dead = make_processor(tiny_model).process([FakeMessage(clash)])[0]
    assert dead.route == "dlq" and dead.value == clash
    assert DeadLetterHeaders.from_kafka(dead.headers).error_class == "ReservedKey"


class FlakyModel:
    """Wraps a model: raises for batches holding 'explode', NaN-like failure for 'nan'."""

    def __init__(self, inner):
        self.inner = inner
        self.versions = inner.versions
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, texts):
        self.calls += 1
        if any("explode" in t for t in texts):
            raise InferenceError("model raised RuntimeError")
        if any("nan" in t for t in texts):
            raise InferenceError("model returned non-finite scores")
        return self.inner.predict(texts)


def test_model_failure_is_bisected_to_the_failing_records(tiny_model):
    texts = [f"track my order thanks {i}" for i in range(8)]
    texts[2] = "explode my refund"
    texts[6] = "nan agent"
    model = FlakyModel(tiny_model)
    messages = [FakeMessage(inquiry(f"e-{i}", t), _offset=i) for i, t in enumerate(texts)]
    records = make_processor(model).process(messages)
    assert [r.source.offset() for r in records] == list(range(8))
    failed = [r for r in records if r.route == "dlq"]
    assert [r.source.offset() for r in failed] == [2, 6]
    assert all(DeadLetterHeaders.from_kafka(r.headers).stage == "inference" for r in failed)
    assert all(r.route == "auto_response" for r in records if r.source.offset() not in (2, 6))
    assert model.calls < 16  # bisection, not one call per record


def test_decode_rejects_text_over_the_limit():
    with pytest.raises(Rejection) as info:
        decode(inquiry("e", "x" * 11), max_text_chars=10)
    assert info.value.error_class == "TextTooLong"
    payload, text = decode(inquiry("e", "x" * 10), max_text_chars=10)
    assert text == "x" * 10 and payload["event_id"] == "e"
