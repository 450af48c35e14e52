"""The consume -> triage -> publish -> commit loop (at-least-once).

Offsets of a batch are committed only after every output record of that batch (enriched event or dead
letter) has been acknowledged by the broker. When publishing fails, the batch is rewound and retried.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.errors import DeliveryError, TriageError
from consumer.processor import OutputRecord, Processor, Rejection
from consumer.settings import Settings

# Broker answers that concern one record, not the connection: retrying the same record cannot succeed.
_RECORD_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
}
OMITTED_HEADER = "triage.value.omitted"


@dataclass
class BatchStats:
    size: int = 0
    auto_response: int = 0
    human_agent: int = 0
    dlq: int = 0


class Publisher:
    """Produces output records and waits until the broker has acknowledged each one."""

    def __init__(self, producer: Producer, processor: Processor, timeout_s: float):
        self.producer = producer
        self.processor = processor
        self.timeout_s = timeout_s

    def publish(self, records: Sequence[OutputRecord]) -> list[OutputRecord]:
        """Publish all records; return the records as finally published (some may become dead letters).

        Raises :class:`DeliveryError` when anything could not be delivered for a reason that a retry
        may cure (broker down, timeout); nothing of the batch may be committed then.
        """
        delivered = list(records)
        rejected = self._send(delivered)
        if rejected:  # outputs the broker refuses as records (too large...): dead-letter their inputs
            letters = [self._as_dead_letter(record, code) for record, code in rejected]
            delivered = [r for r in delivered if all(r is not bad for bad, _ in rejected)] + letters
            still = self._send(letters)
            if still:  # even the original value is refused: keep the pointer to the source offset
                self._send([self._without_value(record) for record, _ in still], final=True)
        return delivered

    def _send(self, records: Sequence[OutputRecord], final: bool = False) -> list[tuple[OutputRecord, int]]:
        transient: list[KafkaError] = []
        rejected: list[tuple[OutputRecord, int]] = []

        def on_delivery(record: OutputRecord):
            def callback(err: KafkaError | None, _msg: Message) -> None:
                if err is None:
                    return
                if err.code() in _RECORD_ERRORS and not final:
                    rejected.append((record, err.code()))
                else:
                    transient.append(err)

            return callback

        for record in records:
            self._produce(record, on_delivery(record), rejected, final)
        remaining = self.producer.flush(self.timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} output records not acknowledged within {self.timeout_s:.0f}s")
        if transient:
            raise DeliveryError(f"{len(transient)} output records failed: {transient[0].name()}")
        return rejected

    def _produce(self, record: OutputRecord, callback, rejected: list, final: bool) -> None:
        while True:
            try:
                self.producer.produce(
                    record.topic, value=record.value, key=record.key, headers=record.headers, on_delivery=callback
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then try again
                self.producer.poll(0.05)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code in _RECORD_ERRORS and not final:
                    rejected.append((record, code))
                    return
                raise DeliveryError(f"cannot produce to {record.topic}: {exc.args[0].name()}") from exc

    def _as_dead_letter(self, record: OutputRecord, code: int) -> OutputRecord:
        name = KafkaError(code).name()
        if record.route == "dlq":
            return self._without_value(record)
        rejection = Rejection("publish", "OutputRejected", f"broker refused the enriched event: {name}")
        return self.processor.dead_letter(record.source, rejection)

    @staticmethod
    def _without_value(record: OutputRecord) -> OutputRecord:
        headers = [(k, v) for k, v in record.headers if k != OMITTED_HEADER] + [(OMITTED_HEADER, b"size")]
        return OutputRecord(record.topic, record.key, None, headers, record.source, "dlq", error=record.error)


class Runner:
    """Runs the service loop until ``stop`` is set, then finishes the batch, flushes, commits, closes."""

    def __init__(self, settings: Settings, processor: Processor, stop: threading.Event | None = None):
        self.settings = settings
        self.processor = processor
        self.stop = stop or threading.Event()
        self.log = structlog.get_logger("triage.runner")
        self.assigned: set[tuple[str, int]] = set()
        self.totals: Counter[str] = Counter()

    def run(self) -> None:
        with ExitStack() as stack:
            consumer = Consumer(self.settings.consumer_config())
            stack.callback(self._close_consumer, consumer)
            producer = Producer(self.settings.producer_config())
            stack.callback(self._close_producer, producer)  # closed first: LIFO
            publisher = Publisher(producer, self.processor, self.settings.delivery_timeout_ms / 1000)
            consumer.subscribe(
                [self.settings.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.log.info("started", input_topic=self.settings.input_topic, group_id=self.settings.group_id)
            while not self.stop.is_set():
                self.step(consumer, publisher)
            self.log.info("stopping", **self.totals)

    def step(self, consumer: Consumer, publisher: Publisher) -> BatchStats | None:
        """One micro-batch: closes at batch_size messages or after batch_max_wait_ms."""
        messages = consumer.consume(self.settings.batch_size, self.settings.batch_max_wait_ms / 1000)
        good = [m for m in messages if self._usable(m)]
        if not good:
            return None
        started = time.perf_counter()
        records = self.processor.process(good)
        inferred = time.perf_counter()
        try:
            published = publisher.publish(records)
        except DeliveryError as exc:
            self.log.warning("publish_failed", error=str(exc), size=len(good), action="rewind_and_retry")
            self._rewind(consumer, good)
            self.stop.wait(self.settings.retry_backoff_ms / 1000)
            return None
        self._commit(consumer, good)
        stats = BatchStats(size=len(good))
        for record in published:
            setattr(stats, record.route, getattr(stats, record.route) + 1)
        self.totals.update(size=stats.size, auto_response=stats.auto_response, human_agent=stats.human_agent, dlq=stats.dlq)
        self.log.info(
            "batch",
            size=stats.size,
            auto_response=stats.auto_response,
            human_agent=stats.human_agent,
            dlq=stats.dlq,
            inference_ms=round((inferred - started) * 1000, 1),
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return stats

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            self.log.warning("consume_error", code=error.name(), reason=error.str(), fatal=error.fatal())
            if error.fatal():
                raise TriageError(f"fatal consumer error: {error.name()}")
        return False

    def _commit(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        offsets = _next_offsets(messages)
        try:
            consumer.store_offsets(offsets=offsets)
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition away: its new owner re-reads these (at-least-once).
            self.log.warning("commit_failed", error=exc.args[0].name())

    def _rewind(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic(), m.partition())
            first[tp] = min(first.get(tp, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                self.log.warning("seek_failed", topic=topic, partition=partition, error=exc.args[0].name())

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.update((p.topic, p.partition) for p in partitions)
        self.log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches are published and committed before the next consume(), so nothing is in flight here.
        self.assigned.difference_update((p.topic, p.partition) for p in partitions)
        self.log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.difference_update((p.topic, p.partition) for p in partitions)
        self.log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _close_producer(self, producer: Producer) -> None:
        remaining = producer.flush(self.settings.delivery_timeout_ms / 1000)
        if remaining:
            self.log.error("producer_flush_incomplete", remaining=remaining)

    def _close_consumer(self, consumer: Consumer) -> None:
        try:
            consumer.close()  # leaves the group; offsets were committed batch by batch
        except (KafkaException, RuntimeError) as exc:
            self.log.warning("consumer_close_failed", error=str(exc))


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        tp = (m.topic(), m.partition())
        last[tp] = max(last.get(tp, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
