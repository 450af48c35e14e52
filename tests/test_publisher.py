"""Publisher: records the broker refuses become dead letters, in at-least-once and in exactly-once mode."""

from datetime import datetime, timezone

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.errors import DeliveryError
from consumer.processor import OutputRecord, Processor, Topics
from consumer.routing import RoutingPolicy
from consumer.runner import OMITTED_HEADER, Publisher
from schemas.deadletter import DeadLetterHeaders
from tests.fakes import FakeMessage

TOPICS = Topics("out.auto", "out.human", "out.dlq")


class BrokerProducer:
    """A producer whose broker refuses, in the delivery report, any value longer than ``limit`` bytes.

    As with librdkafka, a refusal inside a transaction leaves it abortable: until ``abort_transaction`` every
    produce, offset send and commit fails.
    """

    def __init__(self, limit: int, transactional: bool):
        self.limit, self.transactional = limit, transactional
        self.pending: list = []
        self.open: list = []  # delivered inside the current transaction (or directly, without transactions)
        self.committed: list = []  # what readers see
        self.abortable = False
        self.transactions = {"begun": 0, "committed": 0, "aborted": 0}
        self.offsets_sent: list = []

    def _check(self):
        if self.abortable:
            raise KafkaException(KafkaError(KafkaError._STATE, "transaction is abortable", txn_requires_abort=True))

    def init_transactions(self, _timeout):
        pass

    def begin_transaction(self):
        self.transactions["begun"] += 1
        self.open = []

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        self._check()
        self.pending.append((topic, value, key, list(headers or []), on_delivery))

    def flush(self, _timeout=None):
        for topic, value, key, headers, callback in self.pending:
            if value is not None and len(value) > self.limit:
                self.abortable = self.transactional
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                (self.open if self.transactional else self.committed).append((topic, value, key, headers))
                callback(None, None)
        self.pending = []
        return 0

    def poll(self, _timeout=None):
        return 0

    def send_offsets_to_transaction(self, offsets, _metadata, _timeout):
        self._check()
        self.offsets_sent.append(offsets)

    def commit_transaction(self, _timeout):
        self._check()
        self.committed += self.open
        self.open = []
        self.transactions["committed"] += 1

    def abort_transaction(self, _timeout):
        self.open, self.abortable = [], False
        self.transactions["aborted"] += 1


def _processor() -> Processor:
    policy = RoutingPolicy(human_intents=frozenset(), negative_threshold=0.6, abstain_threshold=0.5)
    return Processor(model=None, policy=policy, topics=TOPICS, max_text_chars=10_000,
                     clock=lambda: datetime(2026, 11, 27, tzinfo=timezone.utc))


def _record(offset: int, value: bytes, source_value: bytes = b'{"event_id": "e"}') -> OutputRecord:
    source = FakeMessage(source_value, _offset=offset)
    return OutputRecord("out.auto", b"k", value, [], source, "auto_response", intent="track_order")


def _publisher(limit: int, transactional: bool) -> tuple[Publisher, BrokerProducer]:
    producer = BrokerProducer(limit, transactional)
    return Publisher(lambda: producer, _processor(), timeout_s=1.0, transactional=transactional), producer


@pytest.mark.parametrize("transactional", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_refused_enriched_event_becomes_a_dead_letter_of_its_input(transactional):
    publisher, producer = _publisher(limit=100, transactional=transactional)
    fine, too_big = _record(1, b"x" * 50), _record(2, b"y" * 500)
    published = publisher.publish([fine, too_big], offsets=["offsets"], group_metadata=object())
    assert [(r.topic, r.source.offset()) for r in published] == [("out.auto", 1), ("out.dlq", 2)]
    assert [(topic, value) for topic, value, _, _ in producer.committed] == [
        ("out.auto", b"x" * 50), ("out.dlq", b'{"event_id": "e"}')]
    letter = DeadLetterHeaders.from_kafka(producer.committed[1][3])
    assert (letter.stage, letter.error_class, letter.source_offset) == ("publish", "OutputRejected", 2)
    if transactional:  # the poisoned transaction was aborted; the retry committed outputs and offsets together
        assert producer.transactions == {"begun": 2, "committed": 1, "aborted": 1}
        assert producer.offsets_sent == [["offsets"]]


@pytest.mark.parametrize("transactional", [False, True], ids=["at-least-once", "exactly-once"])
def test_an_input_too_big_to_dead_letter_keeps_a_pointer_without_its_value(transactional):
    publisher, producer = _publisher(limit=100, transactional=transactional)
    record = _record(7, b"y" * 500, source_value=b"z" * 400)
    published = publisher.publish([record], offsets=["offsets"], group_metadata=object())
    assert len(published) == 1 and published[0].route == "dlq"
    [(topic, value, _, headers)] = producer.committed
    assert topic == "out.dlq" and value is None and (OMITTED_HEADER, b"size") in headers
    assert DeadLetterHeaders.from_kafka(headers).source_offset == 7
    if transactional:
        assert producer.transactions == {"begun": 3, "committed": 1, "aborted": 2}


def test_exactly_once_gives_up_with_a_delivery_error_when_nothing_can_be_published():
    publisher, producer = _publisher(limit=100, transactional=True)
    producer.flush = _refuse_everything(producer)  # a broker that refuses even a dead letter without a value
    with pytest.raises(DeliveryError):
        publisher.publish([_record(3, b"y")], offsets=["offsets"], group_metadata=object())
    assert producer.committed == [] and producer.transactions["committed"] == 0


def _refuse_everything(producer: BrokerProducer):
    def flush(_timeout=None):
        for *_, callback in producer.pending:
            producer.abortable = True
            callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
        producer.pending = []
        return 0

    return flush
