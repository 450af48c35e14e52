"""The consume -> triage -> publish -> commit loop (at-least-once).

Offsets of a batch are committed only after every output record of that batch (enriched event or dead
letter) has been acknowledged by the broker. When publishing fails, the batch is rewound and retried.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.errors import DeliveryError, TriageError
from consumer.logs import RepeatFolder, kafka_client_logger
from consumer.metrics import Health, Metrics
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
    """What one batch did; handed to the batch log line and to observers (metrics)."""

    size: int = 0
    auto_response: int = 0
    human_agent: int = 0
    dlq: int = 0
    inference_s: float = 0.0
    total_s: float = 0.0
    records: list[OutputRecord] = field(default_factory=list, repr=False)
    messages: list[Message] = field(default_factory=list, repr=False)


class _Refused(Exception):
    """Records the broker refused (too large...) inside a transaction, which must now be aborted."""

    def __init__(self, refusals: list[tuple[int, int]]):
        super().__init__(f"{len(refusals)} records refused")
        self.refusals = refusals  # (index in the batch, error code)


def _omitted(record: OutputRecord) -> bool:
    return any(k == OMITTED_HEADER for k, _ in record.headers)


@dataclass
class _InFlight:
    messages: list[Message]
    future: Future
    started: float
    finished: bool = False


class Publisher:
    """Produces output records and waits until the broker has acknowledged each one.

    With ``transactional`` (exactly-once mode) a batch's records and its input offsets are committed in
    one Kafka transaction (``send_offsets_to_transaction``), or not at all.
    """

    def __init__(self, producer_factory: Callable[[], Producer], processor: Processor, timeout_s: float,
                 transactional: bool = False):
        self.producer_factory = producer_factory
        self.processor = processor
        self.timeout_s = timeout_s
        self.transactional = transactional
        self.producer = self._new_producer()

    def _new_producer(self) -> Producer:
        producer = self.producer_factory()
        if self.transactional:
            producer.init_transactions(self.timeout_s)
        return producer

    def reset(self) -> None:
        """Replace the producer after a failed delivery: a restarted broker may no longer know its
        idempotence state (producer id, sequence numbers), and the old one would keep timing out.
        When the broker is still away the new producer is created by the next publish instead."""
        old, self.producer = self.producer, None
        if old is not None:
            old.purge(in_queue=True, in_flight=False)
            old.flush(0)
        try:
            self.producer = self._new_producer()
        except KafkaException:
            self.producer = None

    def close(self, timeout_s: float) -> int:
        return self.producer.flush(timeout_s) if self.producer is not None else 0

    def publish(self, records: Sequence[OutputRecord], offsets: list[TopicPartition] | None = None,
                group_metadata: object | None = None) -> list[OutputRecord]:
        """Publish all records; return the records as finally published (some may become dead letters).

        Raises :class:`DeliveryError` when anything could not be delivered for a reason that a retry
        may cure (broker down, timeout); nothing of the batch may be committed then. In transactional
        mode ``offsets`` are committed for ``group_metadata``'s group inside the same transaction.
        """
        if self.producer is None:
            try:
                self.producer = self._new_producer()
            except KafkaException as exc:
                raise DeliveryError(f"no producer: {exc.args[0].name()}") from exc
        outgoing = list(records)  # records are replaced in place by their fallbacks
        alone: set[int] = set()  # indexes sent one at a time from now on
        if not self.transactional:
            self._deliver(outgoing, alone)
            return outgoing
        # A record the broker refuses leaves the transaction abortable: nothing more can join it. So abort and
        # run the batch again, with the refused records sent one at a time (a refusal covers a whole record
        # batch, neighbours included) and a record refused on its own replaced by its fallback. Each refusal
        # moves one record a step (alone, dead letter, dead letter without its value, DeliveryError), so the
        # loop ends.
        for _attempt in range(3 * len(outgoing) + 1):
            try:
                self.producer.begin_transaction()
                self._deliver(outgoing, alone)
                self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s)
                self.producer.commit_transaction(self.timeout_s)
                return outgoing
            except _Refused as refused:
                self._abort()
                self._step_back(outgoing, alone, refused.refusals)
            except (KafkaException, DeliveryError) as exc:
                self._abort()
                raise DeliveryError(f"transaction failed: {exc}") from exc
        raise DeliveryError("the broker kept refusing this batch's records")  # not reached: see the bound above

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException:
            pass  # reset() replaces the producer

    def _deliver(self, outgoing: list[OutputRecord], alone: set[int]) -> None:
        """Send ``outgoing`` (records not in ``alone`` together, then each of ``alone`` on its own) until the broker
        has acknowledged every one; refused records step back (:meth:`_step_back`) and are sent again."""
        pending = list(range(len(outgoing)))
        while pending:
            refusals = self._send(outgoing, [i for i in pending if i not in alone])
            for index in [i for i in pending if i in alone]:
                refusals += self._send(outgoing, [index])
            self._step_back(outgoing, alone, refusals)
            pending = sorted({index for index, _ in refusals})

    def _step_back(self, outgoing: list[OutputRecord], alone: set[int], refusals: Sequence[tuple[int, int]]) -> None:
        """A record refused among others is sent alone from now on; one refused alone gets its fallback."""
        for index, code in dict(refusals).items():
            if index in alone:
                outgoing[index] = self._fallback(outgoing[index], code)
            else:
                alone.add(index)

    def _send(self, outgoing: list[OutputRecord], indexes: Sequence[int]) -> list[tuple[int, int]]:
        """Produce ``outgoing[i]`` for each index and wait for the delivery reports: (index, error code) of the
        records the broker refused as records. In a transaction a refusal raises :class:`_Refused` at once: the
        transaction can take nothing more, so waiting for the other records would only run into the timeout."""
        refusals: list[tuple[int, int]] = []
        transient: list[KafkaError] = []
        stopped: KafkaException | None = None

        def on_delivery(index: int):
            def callback(err: KafkaError | None, _msg: Message) -> None:
                if err is None:
                    return
                if err.code() in _RECORD_ERRORS:
                    refusals.append((index, err.code()))
                else:
                    transient.append(err)

            return callback

        for index in indexes:
            try:
                self._produce(outgoing, index, on_delivery(index))
            except KafkaException as exc:  # the connection, or a transaction an earlier refusal made abortable
                stopped = exc
                break
        deadline = time.monotonic() + self.timeout_s
        remaining = self.producer.flush(0) if indexes else 0
        while remaining and not (self.transactional and refusals) and time.monotonic() < deadline:
            remaining = self.producer.flush(min(0.1, max(0.0, deadline - time.monotonic())))
        if self.transactional and refusals:
            raise _Refused(refusals)
        if stopped is not None:
            raise DeliveryError(f"cannot produce: {stopped.args[0].name()}")
        if remaining:
            raise DeliveryError(f"{remaining} output records not acknowledged within {self.timeout_s:.0f}s")
        if transient:
            raise DeliveryError(f"{len(transient)} output records failed: {transient[0].name()}")
        return refusals

    def _produce(self, outgoing: list[OutputRecord], index: int, callback) -> None:
        while True:
            record = outgoing[index]
            try:
                self.producer.produce(
                    record.topic, value=record.value, key=record.key, headers=record.headers, on_delivery=callback
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then try again
                self.producer.poll(0.05)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code not in _RECORD_ERRORS:
                    raise
                # refused before sending (the client checks the size itself): the transaction, if any, is intact
                outgoing[index] = self._fallback(record, code)

    def _fallback(self, record: OutputRecord, code: int) -> OutputRecord:
        """What to publish instead of a refused record: the input's dead letter; for a refused dead letter, the
        dead letter without its value (a pointer to the source offset); after that, nothing."""
        name = KafkaError(code).name()
        if record.route == "dlq" and _omitted(record):
            raise DeliveryError(f"the broker refuses even a dead letter without its value: {name}")
        if record.route == "dlq":
            return self._without_value(record)
        rejection = Rejection("publish", "OutputRejected", f"broker refused the enriched event: {name}")
        return self.processor.dead_letter(record.source, rejection)

    @staticmethod
    def _without_value(record: OutputRecord) -> OutputRecord:
        headers = [(k, v) for k, v in record.headers if k != OMITTED_HEADER] + [(OMITTED_HEADER, b"size")]
        return OutputRecord(record.topic, record.key, None, headers, record.source, "dlq", error=record.error)


class Runner:
    """Runs the service loop until ``stop`` is set, then finishes the batch, flushes, commits, closes.

    Batching adapts to the backlog: what is already queued is taken at once (up to ``batch_size``); when
    idle, the runner blocks for the first message only, then lingers at most ``batch_max_wait_ms`` to fill
    the model's first forward pass (16 texts on CPU; 256 on a GPU, the default batch). Inference runs in a
    worker thread; when it is slow, the runner pauses its partitions and keeps polling, so the member stays
    in the group however long a batch takes.
    """

    IDLE_POLL_S = 0.2  # how long an idle consume() blocks; bounds the reaction time to a stop request

    def __init__(self, settings: Settings, processor: Processor, stop: threading.Event | None = None,
                 metrics: Metrics | None = None, health: Health | None = None,
                 ticks: Sequence[Callable[[], None]] = ()):
        self.settings = settings
        self.processor = processor
        self.stop = stop or threading.Event()
        self.metrics = metrics
        self.health = health or Health()
        self.ticks = list(ticks)
        self.log = structlog.get_logger("triage.runner")
        self._kafka_errors = RepeatFolder()  # a broker that is away: one kafka_error line per code and 30 s
        self.assigned: set[tuple[str, int]] = set()
        self.totals: Counter[str] = Counter()
        self._carry: list[Message] = []
        self._inflight: _InFlight | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-inference")
        self._consumer: Consumer | None = None
        self._publisher: Publisher | None = None
        # poll at least this often while a batch is being inferred (well inside max.poll.interval.ms)
        self._keepalive_s = min(1.0, settings.max_poll_interval_ms / 1000 / 10)

    def run(self) -> None:
        with ExitStack() as stack:
            stack.callback(self._worker.shutdown, wait=True)
            consumer = Consumer({**self.settings.consumer_config(), "error_cb": self._on_kafka_error,
                                 "logger": kafka_client_logger()})
            stack.callback(self._close_consumer, consumer)
            self._consumer = consumer
            # one producer configuration (and transactional.id) per process: a replacement producer fences
            # and aborts what its predecessor left open
            producer_config = {**self.settings.producer_config(), "logger": kafka_client_logger()}
            self._publisher = Publisher(lambda: Producer(producer_config), self.processor,
                                        self.settings.delivery_timeout_ms / 1000, self.settings.exactly_once)
            stack.callback(self._close_producer, self._publisher)  # closed first: LIFO
            consumer.subscribe(
                [self.settings.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.log.info("started", input_topic=self.settings.input_topic, group_id=self.settings.group_id)
            while not self.stop.is_set():
                self.step()
                for tick in self.ticks:  # between batches: hot reload and the like
                    tick()
            self.log.info("stopping", **self.totals)

    def step(self) -> BatchStats | None:
        """One micro-batch: take, infer (in the worker), publish, commit."""
        consumer = self._consumer
        assert consumer is not None
        messages = self._take_batch(consumer)
        if not messages:
            return None
        inflight = _InFlight(messages, self._worker.submit(self.processor.process, messages), time.perf_counter())
        self._inflight = inflight
        self._wait_for(consumer, inflight)
        if inflight.finished:  # a revoke already published and committed it
            return None
        return self._finish(consumer, inflight)

    def _take_batch(self, consumer: Consumer) -> list[Message]:
        size = self.settings.batch_size
        batch, self._carry = self._carry[:size], self._carry[size:]
        if len(batch) < size:
            batch += self._poll(consumer, size - len(batch), 0)
        if not batch:
            batch = self._poll(consumer, 1, self.IDLE_POLL_S)
            if batch and size > 1:
                batch += self._poll(consumer, size - 1, 0)
        # Linger only to fill the first forward pass: past one pass (16 texts on CPU), waiting buys no speed,
        # only latency; on a GPU a pass is 256 texts, the default batch.
        fill = min(size, self._pass_size())
        linger = self.settings.batch_max_wait_ms / 1000
        if batch and len(batch) < fill and linger > 0:
            batch += self._poll(consumer, fill - len(batch), linger)
        # a revoke inside one of these polls gave some partitions away: their new owner reads those
        return [m for m in batch if (m.topic(), m.partition()) in self.assigned]

    def _pass_size(self) -> int:
        """The most texts per forward pass of the model being served (a reload may change it)."""
        size = getattr(getattr(self.processor, "model", None), "batch_size", None)
        return size if isinstance(size, int) and size > 0 else self.settings.batch_size

    def _poll(self, consumer: Consumer, count: int, timeout_s: float) -> list[Message]:
        messages = [m for m in consumer.consume(count, timeout_s) if self._usable(m)]
        if messages:
            self.health.update(broker_reachable=True)
        return messages

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.update(broker_reachable=False)
        repeats = self._kafka_errors.admit(error.code())
        if repeats is not None:
            extra = {"repeats": repeats} if repeats else {}
            self.log.warning("kafka_error", code=error.name(), reason=error.str(), **extra)

    def _wait_for(self, consumer: Consumer, inflight: _InFlight) -> None:
        """Wait for inference; when it takes long, pause partitions and keep polling to stay in the group."""
        try:
            inflight.future.result(timeout=self._keepalive_s)
            return
        except FutureTimeout:
            pass
        consumer.pause(consumer.assignment())
        self.log.info("inference_slow_pausing", size=len(inflight.messages), partitions=len(self.assigned))
        while not inflight.future.done() and not inflight.finished:
            # Paused partitions yield nothing; ones assigned meanwhile may: keep what they gave for the next
            # batch and pause them too, so nothing piles up however long the inference takes.
            arrived = self._poll(consumer, self.settings.batch_size, min(0.2, self._keepalive_s))
            if arrived:
                self._carry += arrived
                consumer.pause(consumer.assignment())
        consumer.resume(consumer.assignment())

    def _finish(self, consumer: Consumer, inflight: _InFlight) -> BatchStats | None:
        inflight.finished = True
        if self._inflight is inflight:
            self._inflight = None
        records = inflight.future.result()  # an unexpected processor error stops the service, uncommitted
        inferred = time.perf_counter()
        exactly_once = self.settings.exactly_once
        offsets = _next_offsets(inflight.messages)
        try:
            published = self._publisher.publish(
                records,
                offsets if exactly_once else None,
                consumer.consumer_group_metadata() if exactly_once else None,
            )
        except DeliveryError as exc:
            self.log.warning("publish_failed", error=str(exc), size=len(inflight.messages), action="rewind_and_retry")
            self._publisher.reset()
            self._rewind(consumer, inflight.messages)
            self.stop.wait(self.settings.retry_backoff_ms / 1000)
            return None
        if not exactly_once:  # in exactly-once mode the offsets were committed in the transaction
            self._commit(consumer, offsets)
        stats = BatchStats(size=len(inflight.messages), inference_s=inferred - inflight.started,
                           records=published, messages=inflight.messages)
        for record in published:
            setattr(stats, record.route, getattr(stats, record.route) + 1)
        stats.total_s = time.perf_counter() - inflight.started
        self.totals.update(size=stats.size, auto_response=stats.auto_response, human_agent=stats.human_agent,
                           dlq=stats.dlq)
        self.log.info(
            "batch",
            size=stats.size,
            auto_response=stats.auto_response,
            human_agent=stats.human_agent,
            dlq=stats.dlq,
            inference_ms=round(stats.inference_s * 1000, 1),
            latency_ms=round(stats.total_s * 1000, 1),
        )
        if self.metrics is not None:
            self.metrics.observe_batch(stats)
            self._record_lag(consumer, offsets)
        return stats

    def _record_lag(self, consumer: Consumer, offsets: Sequence[TopicPartition]) -> None:
        for tp in offsets:
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.set_lag(tp.topic, tp.partition, high - tp.offset)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            self.log.warning("consume_error", code=error.name(), reason=error.str(), fatal=error.fatal())
            if error.fatal():
                raise TriageError(f"fatal consumer error: {error.name()}")
        return False

    def _commit(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
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
        # queued messages of these partitions come after the rewound ones: drop them, they are re-read
        self._drop_queued(set(first))
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                if (topic, partition) in self.assigned:
                    # going on would commit past the unpublished batch later: stop, uncommitted, instead
                    raise TriageError(f"cannot rewind {topic}[{partition}] to {offset}: {exc.args[0].name()}") from exc
                self.log.warning("seek_failed", topic=topic, partition=partition, error=exc.args[0].name())

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.update((p.topic, p.partition) for p in partitions)
        self.health.update(partitions=len(self.assigned), broker_reachable=True)
        self.log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch in flight (publish + commit) before giving partitions away: no duplicates."""
        revoked = {(p.topic, p.partition) for p in partitions}
        inflight = self._inflight
        if inflight is not None and not inflight.finished:
            inflight.future.result()
            self._finish(consumer, inflight)
        self._forget(revoked)
        self.log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self._forget(lost)
        self.log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _drop_queued(self, partitions: set[tuple[str, int]]) -> None:
        self._carry = [m for m in self._carry if (m.topic(), m.partition()) not in partitions]

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions revoked or lost: their queued messages belong to the next owner."""
        self._drop_queued(partitions)
        self.assigned.difference_update(partitions)
        self.health.update(partitions=len(self.assigned))
        if self.metrics is not None:
            self.metrics.forget_partitions(list(partitions))

    def _close_producer(self, publisher: Publisher) -> None:
        remaining = publisher.close(self.settings.delivery_timeout_ms / 1000)
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
