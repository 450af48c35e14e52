"""Publisher: records the broker refuses become dead letters, in at-least-once and in exactly-once mode."""

from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.errors import DeliveryError, PublishRefused, TransactionUnknown
from consumer.processor import OutputRecord, Processor, Topics
from consumer.publisher import OMITTED_HEADER, Publisher, record_size
from consumer.routing import RoutingPolicy
from schemas.deadletter import DeadLetterHeaders
from tests.fakes import FakeMessage

TOPICS = Topics("out.auto", "out.human", "out.dlq")
MODES = pytest.mark.parametrize("transactional", [False, True], ids=["at-least-once", "exactly-once"])


class BrokerProducer:
    """A producer in front of a broker that limits the size of a record batch, behaving as librdkafka does.

    - ``produce`` refuses a value over ``local_limit`` itself (MSG_SIZE_TOO_LARGE, synchronously).
    - ``flush`` sends what is queued as one record batch per topic, in order; the broker refuses a batch whose
      values together exceed ``batch_limit``: every record in it gets MSG_SIZE_TOO_LARGE in its delivery report.
    - In a transaction a refusal makes it abortable: later batches are not sent (they stay queued and ``flush``
      reports them as remaining) and ``produce``, offsets and commit fail until ``abort_transaction`` purges the queue.
    """

    def __init__(self, batch_limit: int, transactional: bool, local_limit: int = 10**9):
        self.batch_limit, self.local_limit, self.transactional = batch_limit, local_limit, transactional
        self.queued: list = []
        self.open: list = []  # delivered inside the current transaction
        self.committed: list = []  # what read_committed readers see
        self.abortable = False
        self.transactions = {"begun": 0, "committed": 0, "aborted": 0}
        self.offsets_sent: list = []
        self.flushes = 0

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
        if value is not None and len(value) > self.local_limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.queued.append((topic, value, key, list(headers or []), on_delivery))

    def flush(self, _timeout=None):
        self.flushes += 1
        while self.queued and not self.abortable:
            topic = self.queued[0][0]
            batch = [r for r in self.queued if r[0] == topic]
            self.queued = [r for r in self.queued if r[0] != topic]
            refused = sum(len(r[1] or b"") for r in batch) > self.batch_limit
            for record in batch:
                if refused:
                    record[4](KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
                else:
                    (self.open if self.transactional else self.committed).append(record[:4])
                    record[4](None, None)
            self.abortable = refused and self.transactional
        return len(self.queued)

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
        for record in self.queued:
            record[4](KafkaError(KafkaError._PURGE_QUEUE), None)
        self.queued, self.open, self.abortable = [], [], False
        self.transactions["aborted"] += 1


def _processor() -> Processor:
    policy = RoutingPolicy(human_intents=frozenset(), negative_threshold=0.6, abstain_threshold=0.5)
    return Processor(
        model=None,
        policy=policy,
        topics=TOPICS,
        max_text_chars=10_000,
        clock=lambda: datetime(2026, 11, 27, tzinfo=UTC),
    )


def _record(offset: int, value: bytes, topic: str = "out.auto", source_value: bytes = b'{"event_id": "e"}'):
    source = FakeMessage(source_value, _offset=offset)
    return OutputRecord(topic, b"k", value, [], source, "auto_response", intent="track_order")


def _publisher(producer: BrokerProducer) -> Publisher:
    return Publisher(lambda: producer, _processor(), timeout_s=5.0, transactional=producer.transactional)


def _seen(producer: BrokerProducer) -> list[tuple[str, bytes | None]]:
    return [(topic, value) for topic, value, _, _ in producer.committed]


@MODES
def test_a_refused_record_becomes_a_dead_letter_and_its_batch_neighbours_are_delivered(transactional):
    producer = BrokerProducer(batch_limit=100, transactional=transactional)
    fine, too_big, also_fine = _record(1, b"x" * 50), _record(2, b"y" * 500), _record(3, b"z" * 40)
    published = _publisher(producer).publish([fine, too_big, also_fine], offsets=["offsets"], group_metadata=object())
    # the broker refused the whole first record batch; sent one at a time, only the big one is refused again
    assert [(r.topic, r.source.offset()) for r in published] == [("out.auto", 1), ("out.dlq", 2), ("out.auto", 3)]
    assert sorted(_seen(producer)) == [
        ("out.auto", b"x" * 50),
        ("out.auto", b"z" * 40),
        ("out.dlq", b'{"event_id": "e"}'),
    ]
    letter = DeadLetterHeaders.from_kafka(next(h for t, _, _, h in producer.committed if t == "out.dlq"))
    assert (letter.stage, letter.error_class, letter.source_offset) == ("publish", "OutputRejected", 2)
    if transactional:  # every poisoned transaction was aborted; the last one carried outputs and offsets together
        assert producer.transactions == {"begun": 3, "committed": 1, "aborted": 2}
        assert producer.offsets_sent == [["offsets"]]


def test_in_a_transaction_a_refusal_stops_the_wait_for_records_that_can_no_longer_be_sent():
    producer = BrokerProducer(batch_limit=100, transactional=True)
    records = [_record(1, b"y" * 500), _record(2, b"h" * 10, topic="out.human")]  # the second batch stays queued
    published = _publisher(producer).publish(records, offsets=["offsets"], group_metadata=object())
    assert [r.route for r in published] == ["dlq", "auto_response"]
    assert sorted(_seen(producer)) == [("out.dlq", b'{"event_id": "e"}'), ("out.human", b"h" * 10)]
    assert producer.flushes < 10, "no waiting out the delivery timeout on a transaction that can take nothing more"


@MODES
def test_an_input_too_big_to_dead_letter_keeps_a_pointer_without_its_value(transactional):
    producer = BrokerProducer(batch_limit=100, transactional=transactional)
    published = _publisher(producer).publish(
        [_record(7, b"y" * 500, source_value=b"z" * 400)], offsets=["offsets"], group_metadata=object()
    )
    assert len(published) == 1 and published[0].route == "dlq"
    [(topic, value, _, headers)] = producer.committed
    assert topic == "out.dlq" and value is None and (OMITTED_HEADER, b"value,headers") in headers
    assert DeadLetterHeaders.from_kafka(headers).source_offset == 7
    if transactional:  # refused in a batch, alone, as a dead letter; the pointer commits
        assert producer.transactions == {"begun": 4, "committed": 1, "aborted": 3}


def test_a_refusal_by_the_client_itself_needs_no_new_transaction():
    producer = BrokerProducer(batch_limit=10**6, transactional=True, local_limit=100)
    published = _publisher(producer).publish(
        [_record(1, b"x" * 50), _record(2, b"y" * 500)], offsets=["offsets"], group_metadata=object()
    )
    assert [r.route for r in published] == ["auto_response", "dlq"]
    assert producer.transactions == {"begun": 1, "committed": 1, "aborted": 0}


@MODES
def test_it_stops_with_a_clear_reason_when_even_the_pointer_is_refused(transactional):
    producer = BrokerProducer(batch_limit=-1, transactional=transactional)  # refuses even a value of None
    with pytest.raises(PublishRefused, match="without its value"):
        _publisher(producer).publish([_record(3, b"y")], offsets=["offsets"], group_metadata=object())
    assert producer.committed == []
    if transactional:  # refused in a batch, alone, as a dead letter, as a pointer: four aborted transactions
        assert producer.transactions == {"begun": 4, "committed": 0, "aborted": 4} and not producer.abortable


def test_an_output_over_max_message_bytes_steps_to_its_fallback_before_it_is_sent():
    producer = BrokerProducer(batch_limit=10**6, transactional=True)
    publisher = Publisher(lambda: producer, _processor(), timeout_s=5.0, transactional=True, max_message_bytes=2_000)
    published = publisher.publish(
        [_record(1, b"x" * 50), _record(2, b"y" * 5_000)], offsets=["offsets"], group_metadata=object()
    )
    assert [r.route for r in published] == ["auto_response", "dlq"]
    assert all(record_size(r) <= 2_000 for r in published)
    assert producer.transactions == {"begun": 1, "committed": 1, "aborted": 0}, "no refusal was needed"


def test_a_pointer_drops_the_input_headers_and_an_oversized_key_but_keeps_where_the_input_is():
    source = FakeMessage(b"z" * 400, _key=b"K" * 10_000, _headers=[("big", b"h" * 900_000), ("trace", b"t")], _offset=9)
    record = OutputRecord(
        "out.auto", source.key(), b"y" * 500, source.headers(), source, "auto_response", intent="track_order"
    )
    producer = BrokerProducer(batch_limit=10**9, transactional=False)
    publisher = Publisher(lambda: producer, _processor(), timeout_s=5.0, max_message_bytes=100_000)
    [published] = publisher.publish([record])
    assert published.route == "dlq" and published.value is None and published.key is None
    assert record_size(published) < 100_000
    names = [k for k, _ in published.headers]
    assert "big" not in names and "trace" not in names
    assert (OMITTED_HEADER, b"value,headers,key") in published.headers
    assert DeadLetterHeaders.from_kafka(published.headers).source_offset == 9


@MODES
def test_records_of_a_key_keep_their_order_when_one_of_them_is_refused(transactional):
    producer = BrokerProducer(batch_limit=100, transactional=transactional)
    records = [_record(1, b"a" * 10), _record(2, b"b" * 500), _record(3, b"c" * 10), _record(4, b"d" * 10)]
    _publisher(producer).publish(records, offsets=["offsets"], group_metadata=object())
    # one key (b"k"), one partition: what a reader sees must follow the input offsets, the dead letter included
    order = [
        DeadLetterHeaders.from_kafka(h).source_offset if t == "out.dlq" else {b"a": 1, b"c": 3, b"d": 4}[v[:1]]
        for t, v, _, h in producer.committed
    ]
    assert order == [1, 2, 3, 4]


class FailingProducer(BrokerProducer):
    """Delivery reports carry ``code`` for every record; commits may time out."""

    def __init__(self, code: int | None = None, commit_error: KafkaError | None = None, transactional=False):
        super().__init__(batch_limit=10**9, transactional=transactional)
        self.code, self.commit_error = code, commit_error

    def flush(self, _timeout=None):
        if self.code is None:
            return super().flush(_timeout)
        for record in self.queued:
            record[4](KafkaError(self.code), None)
        self.queued = []
        return 0

    def commit_transaction(self, _timeout):
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)
        super().commit_transaction(_timeout)


@pytest.mark.parametrize("code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART])
def test_a_permanent_refusal_stops_with_its_reason_instead_of_retrying(code):
    producer = FailingProducer(code)
    with pytest.raises(PublishRefused, match=KafkaError(code).name()):
        _publisher(producer).publish([_record(1, b"x")])


def test_a_transient_failure_is_a_delivery_error_the_runner_retries():
    producer = FailingProducer(KafkaError._MSG_TIMED_OUT)
    with pytest.raises(DeliveryError):
        _publisher(producer).publish([_record(1, b"x")])


def test_a_commit_without_an_answer_is_not_taken_for_an_abort():
    timeout = KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True)
    producer = FailingProducer(commit_error=timeout, transactional=True)
    publisher = Publisher(lambda: producer, _processor(), timeout_s=0.3, transactional=True)
    with pytest.raises(TransactionUnknown):
        publisher.publish([_record(1, b"x")], offsets=["offsets"], group_metadata=object())
    assert producer.transactions["aborted"] == 0, "aborting (and replaying) could duplicate a committed batch"


def test_a_commit_the_broker_aborted_is_retried():
    aborted = KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)
    producer = FailingProducer(commit_error=aborted, transactional=True)
    with pytest.raises(DeliveryError, match="aborted"):
        _publisher(producer).publish([_record(1, b"x")], offsets=["offsets"], group_metadata=object())
    assert producer.transactions["aborted"] == 1
