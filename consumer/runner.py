"""The consume -> triage -> publish -> commit loop.

Offsets of a batch are committed only after every output record of that batch (enriched event or dead
letter) has been acknowledged by the broker (at-least-once), or together with them in one transaction
(exactly-once). When publishing fails for a reason a retry may cure, the batch is rewound and retried with
exponential backoff; when the model fails or hangs batch after batch, a circuit breaker stops consuming
until it answers again; a reason no retry cures stops the service with that reason, uncommitted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.attempts import CrashGuard, offset_of, partition_of
from consumer.errors import AuthenticationError, DeliveryError, PublishRefused, TransactionUnknown, TriageError
from consumer.instance import transactional_id
from consumer.logs import RepeatFolder, kafka_client_logger
from consumer.metrics import Health, Metrics
from consumer.processor import OutputRecord, Processor, Rejection
from consumer.publisher import Publisher
from consumer.resilience import Backoff, Breaker
from consumer.settings import Settings
from consumer.topics import authentication_failure


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


def _shadow_counts(records: list[OutputRecord]) -> dict[str, int]:
    """For the batch log line, when a shadow model runs: how often it would have routed differently."""
    compared = [r for r in records if r.shadow_intent is not None]
    if not compared and not any(r.shadow_failed for r in records):
        return {}
    return {
        "shadow_compared": len(compared),
        "shadow_intent_differs": sum(r.shadow_intent != r.intent for r in compared),
        "shadow_route_differs": sum(r.shadow_route != r.route for r in compared),
    }


@dataclass
class _InFlight:
    messages: list[Message]
    future: Future[list[OutputRecord]]
    started: float
    group_metadata: object | None = None  # read when the batch was taken: a later rebalance must not be used
    poisoned: list[Message] = field(default_factory=list)  # dead-lettered unprocessed (crashed the service before)
    finished: bool = False
    epochs: dict[tuple[str, int], int] = field(default_factory=dict)  # each partition's assignment when taken


class _InferenceTimeout(Exception):
    pass


class Runner:
    """Runs the service loop until ``stop`` is set, then finishes the batch, flushes, commits, closes.

    Batching adapts to the backlog: what is already queued is taken at once (up to ``batch_size``); when
    idle, the runner blocks for the first message only, then lingers at most ``batch_max_wait_ms`` to fill
    the model's first forward pass (16 texts on CPU; 256 on a GPU, the default batch). Inference runs in a
    worker thread; when it is slow, the runner pauses its partitions and keeps polling, so the member stays
    in the group however long a batch takes (up to ``inference_timeout_s``).
    """

    IDLE_POLL_S = 0.2  # how long an idle consume() blocks; bounds the reaction time to a stop request

    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
        ticks: Sequence[Callable[[], None]] = (),
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ):
        self.settings = settings
        self.processor = processor
        self.stop = stop or threading.Event()
        self.metrics = metrics
        self.health = health or Health(stall_timeout_s=settings.stall_timeout_s)
        self.ticks = list(ticks)
        self.consumer_factory, self.producer_factory = consumer_factory, producer_factory
        self.log = structlog.get_logger("triage.runner")
        self._kafka_errors = RepeatFolder()  # a broker that is away: one kafka_error line per code and 30 s
        self.assigned: set[tuple[str, int]] = set()
        # bumped whenever a partition is revoked or lost: a partition lost and assigned again within one poll
        # is a new assignment, which re-reads from the committed offset, so a batch taken before is stale
        self._epochs: Counter[tuple[str, int]] = Counter()
        self.totals: Counter[str] = Counter()
        self._carry: list[Message] = []
        self._inflight: _InFlight | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-inference")
        self._hung: Future[list[OutputRecord]] | None = None  # an inference that timed out and may still be running
        self._held = False  # partitions paused by _hold
        self._consumer: Consumer | None = None
        self._refused: AuthenticationError | None = None  # set by the client's error callback
        self._publisher: Publisher | None = None
        # publishing and the model back off apart: a batch the model answers says nothing about the broker
        self._publish_backoff = Backoff(settings.retry_backoff_ms / 1000, settings.retry_backoff_max_ms / 1000)
        self._model_backoff = Backoff(settings.retry_backoff_ms / 1000, settings.retry_backoff_max_ms / 1000)
        self.breaker = Breaker(settings.model_failure_limit, settings.breaker_cooldown_s)
        self.crashes = CrashGuard(
            settings.crash_limit, settings.batch_size, settings.state_dir / f"attempts-{_safe(settings.group_id)}.json"
        )
        # poll at least this often while a batch is being inferred (well inside max.poll.interval.ms)
        self._keepalive_s = min(1.0, settings.max_poll_interval_ms / 1000 / 10)

    def run(self) -> None:
        with ExitStack() as stack:
            stack.callback(self._shutdown_worker)
            consumer = self.consumer_factory(
                {**self.settings.consumer_config(), "error_cb": self._on_kafka_error, "logger": kafka_client_logger()}
            )
            stack.callback(self._close_consumer, consumer)
            self._consumer = consumer
            txn_id = None
            if self.settings.exactly_once:
                # the same id on every start of this member: the new producer fences its killed predecessor and
                # aborts what that one left open, instead of readers waiting out transaction.timeout.ms
                txn_id = stack.enter_context(transactional_id(self.settings))
            producer_config = {**self.settings.producer_config(txn_id), "logger": kafka_client_logger()}
            self._publisher = Publisher(
                lambda: self.producer_factory(producer_config),
                self.processor,
                self.settings.delivery_timeout_ms / 1000,
                self.settings.exactly_once,
                max_message_bytes=self.settings.max_message_bytes,
            )
            stack.callback(self._close_producer, self._publisher)  # closed first: LIFO
            consumer.subscribe(
                [self.settings.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.log.info(
                "started",
                input_topic=self.settings.input_topic,
                group_id=self.settings.group_id,
                transactional_id=txn_id,
            )
            while not self.stop.is_set():
                if self._refused is not None:
                    raise self._refused
                self.step()
                for tick in self.ticks:  # between batches: hot reload and the like
                    tick()
            self._finish_cleanly(consumer)
            self.log.info("stopping", **self.totals)

    def step(self) -> BatchStats | None:
        """One micro-batch: take, infer (in the worker), publish, commit."""
        consumer = self._consumer
        assert consumer is not None
        if not self._may_try():
            self._hold(consumer)
            return None
        messages = self._take_batch(consumer)
        if not messages:
            return None
        plan = self.crashes.plan(consumer, messages)
        if plan.deferred:  # partitions that crashed the service before: one record per batch for a while
            self._carry = _in_offset_order(plan.deferred + self._carry)
        self.health.update(unfinished_since=self.health.unfinished_since or time.monotonic())
        inflight = _InFlight(
            plan.process + plan.poisoned,
            self._worker.submit(self.processor.process, plan.process),
            time.perf_counter(),
            poisoned=plan.poisoned,
        )
        inflight.epochs = {tp: self._epochs[tp] for tp in {partition_of(m) for m in inflight.messages}}
        if self.settings.exactly_once:
            inflight.group_metadata = consumer.consumer_group_metadata()
        self._inflight = inflight
        try:
            self._wait_for(consumer, inflight)
        except _InferenceTimeout:
            self._inference_failed(
                consumer, inflight, f"inference took longer than {self.settings.inference_timeout_s:g}s"
            )
            return None
        if inflight.finished:  # a revoke already published and committed it
            return None
        return self._finish(consumer, inflight)

    def _may_try(self) -> bool:
        """False while the breaker is open (or a timed-out inference still runs: never two at once)."""
        if self._hung is not None:
            if not self._hung.done():
                return False
            self._hung = None
        return self.breaker.allow()

    def _hold(self, consumer: Consumer) -> None:
        """Breaker open: keep the partitions (and the group membership) without taking records."""
        consumer.pause(consumer.assignment())
        self._held = True
        arrived = self._poll(consumer, self.settings.batch_size, self.IDLE_POLL_S)
        if arrived:  # from partitions assigned meanwhile; they are paused now too
            self._carry += arrived
            consumer.pause(consumer.assignment())
        self.stop.wait(self.IDLE_POLL_S)

    def _take_batch(self, consumer: Consumer) -> list[Message]:
        if self._held:  # the partitions were paused while the breaker was open or an inference hung
            consumer.resume(consumer.assignment())
            self._held = False
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
        failure = authentication_failure(error)
        if failure is not None and self._refused is None:
            self._refused = failure  # raised by the loop: librdkafka would otherwise reconnect with the same login
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.update(broker_reachable=False)
        repeats = self._kafka_errors.admit(error.code())
        if repeats is not None:
            extra = {"repeats": repeats} if repeats else {}
            self.log.warning("kafka_error", code=error.name(), reason=error.str(), **extra)

    def _wait_for(self, consumer: Consumer, inflight: _InFlight) -> None:
        """Wait for inference; when it takes long, pause partitions and keep polling to stay in the group.
        Raises :class:`_InferenceTimeout` past ``inference_timeout_s``."""
        if wait_for_futures([inflight.future], timeout=self._keepalive_s).done:
            return  # answered or raised: _finish reads which
        deadline = inflight.started + self.settings.inference_timeout_s
        consumer.pause(consumer.assignment())
        self.log.info("inference_slow_pausing", size=len(inflight.messages), partitions=len(self.assigned))
        try:
            while not inflight.future.done() and not inflight.finished:
                if time.perf_counter() > deadline:
                    raise _InferenceTimeout
                # Paused partitions yield nothing; ones assigned meanwhile may: keep what they gave for the next
                # batch and pause them too, so nothing piles up however long the inference takes.
                arrived = self._poll(consumer, self.settings.batch_size, min(0.2, self._keepalive_s))
                if arrived:
                    self._carry += arrived
                    consumer.pause(consumer.assignment())
        finally:
            consumer.resume(consumer.assignment())

    def _inference_failed(self, consumer: Consumer, inflight: _InFlight, reason: str) -> None:
        """The model raised for the whole batch or hung: rewind the batch, count it against the breaker."""
        inflight.finished = True
        if self._inflight is inflight:
            self._inflight = None
        if not inflight.future.done():  # hung: leave its thread, serve the next batch from a new one
            self._hung = inflight.future
            self._worker.shutdown(wait=False)
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-inference")
        self._rewind(consumer, inflight.messages)
        if self.metrics is not None:
            self.metrics.model_failures.inc()
        opened = self.breaker.failed(reason)
        self.health.update(model_ok=not self.breaker.is_open, model_problem=reason if self.breaker.is_open else None)
        if opened:
            self.log.error(
                "consuming_stopped",
                reason=reason,
                failures=self.breaker.failures,
                retry_in_s=self.settings.breaker_cooldown_s,
            )
        else:
            self.log.warning("model_failed", reason=reason, size=len(inflight.messages), action="rewind_and_retry")
            self.stop.wait(self._model_backoff.next())

    def _finish(self, consumer: Consumer, inflight: _InFlight) -> BatchStats | None:
        inflight.finished = True
        if self._inflight is inflight:
            self._inflight = None
        try:
            records = inflight.future.result()
        except Exception as exc:  # the model failed for the whole batch (the processor isolates record errors)
            self._inference_failed(consumer, inflight, f"{type(exc).__name__} from the model")
            return None
        if self.breaker.succeeded():
            self.health.update(model_ok=True, model_problem=None)
            self.log.info("consuming_resumed")
        self._model_backoff.reset()
        records = self._with_poisoned(records, inflight.poisoned)
        messages, records = self._still_owned(inflight, records)
        if not messages:
            return None
        inferred = time.perf_counter()
        exactly_once = self.settings.exactly_once
        offsets = self.crashes.marked(_next_offsets(messages))
        publisher = self._publisher
        assert publisher is not None  # made by run() before it subscribes: there is no batch without it
        try:
            published = publisher.publish(records, offsets if exactly_once else None, inflight.group_metadata)
        except DeliveryError as exc:
            delay = self._publish_backoff.next()
            self.log.warning(
                "publish_failed",
                error=str(exc),
                size=len(messages),
                action="rewind_and_retry",
                retry_in_s=round(delay, 2),
            )
            if self.metrics is not None:
                self.metrics.publish_failures.labels(kind="transient").inc()
                self.metrics.publish_retries.inc()
            publisher.reset()
            self._rewind(consumer, messages)
            self.stop.wait(delay)
            return None
        except (PublishRefused, TransactionUnknown) as exc:
            if self.metrics is not None:
                self.metrics.publish_failures.labels(kind="permanent").inc()
            self.health.update(publishing_ok=False)
            self.log.error("publish_refused", error=str(exc), size=len(messages), action="stop_uncommitted")
            raise
        self._publish_backoff.reset()
        # in exactly-once mode the offsets were committed in the transaction
        if exactly_once or self._commit(consumer, offsets):
            self.crashes.remember(offsets)
        self.health.update(
            unfinished_since=None if not self._carry else time.monotonic(), last_progress=time.monotonic()
        )
        stats = BatchStats(
            size=len(messages), inference_s=inferred - inflight.started, records=published, messages=messages
        )
        for record in published:
            setattr(stats, record.route, getattr(stats, record.route) + 1)
        stats.total_s = time.perf_counter() - inflight.started
        self.totals.update(
            size=stats.size, auto_response=stats.auto_response, human_agent=stats.human_agent, dlq=stats.dlq
        )
        self.log.info(
            "batch",
            size=stats.size,
            auto_response=stats.auto_response,
            human_agent=stats.human_agent,
            dlq=stats.dlq,
            inference_ms=round(stats.inference_s * 1000, 1),
            latency_ms=round(stats.total_s * 1000, 1),
            **_shadow_counts(published),
        )
        if self.metrics is not None:
            self.metrics.observe_batch(stats)
            self._record_lag(consumer, offsets)
        return stats

    def _with_poisoned(self, records: list[OutputRecord], poisoned: Sequence[Message]) -> list[OutputRecord]:
        """The batch's outputs plus a dead letter for each record that crashed the service ``crash_limit`` times."""
        limit = self.settings.crash_limit
        letters = [
            self.processor.dead_letter(
                m,
                Rejection(
                    "crash",
                    "CrashLoop",
                    f"the service stopped {limit} times while processing this record; dead-lettered unprocessed",
                ),
            )
            for m in poisoned
        ]
        return _in_source_order(records + letters) if letters else records

    def _still_owned(
        self, inflight: _InFlight, records: Sequence[OutputRecord]
    ) -> tuple[list[Message], list[OutputRecord]]:
        """Drop what belongs to partitions lost during the batch, even when assigned again since: their new
        assignment reads them again, and publishing them here would only duplicate (or, in a transaction, be
        fenced)."""
        messages = inflight.messages

        def owned_now(tp: tuple[str, int]) -> bool:
            return tp in self.assigned and self._epochs[tp] == inflight.epochs.get(tp, self._epochs[tp])

        owned = [m for m in messages if owned_now(partition_of(m))]
        if len(owned) == len(messages):
            return list(messages), list(records)
        self.log.warning("batch_dropped_partitions_lost", dropped=len(messages) - len(owned))
        keep = {(m.topic(), m.partition()) for m in owned}
        return owned, [r for r in records if (r.source.topic(), r.source.partition()) in keep]

    def _record_lag(self, consumer: Consumer, offsets: Sequence[TopicPartition]) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        for tp in offsets:
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                metrics.set_lag(tp.topic, tp.partition, high - tp.offset)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            self.log.warning("consume_error", code=error.name(), reason=error.str(), fatal=error.fatal())
            if error.fatal():
                raise TriageError(f"fatal consumer error: {error.name()}")
        return False

    def _commit(self, consumer: Consumer, offsets: list[TopicPartition]) -> bool:
        try:
            consumer.store_offsets(offsets=offsets)
            consumer.commit(asynchronous=False)
            return True
        except KafkaException as exc:
            # Typically a rebalance took the partition away: its new owner re-reads these (at-least-once).
            self.log.warning("commit_failed", error=exc.args[0].name())
            return False

    def _rewind(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            tp, offset = partition_of(m), offset_of(m)
            first[tp] = min(first.get(tp, offset), offset)
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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.update((p.topic, p.partition) for p in partitions)
        self.crashes.assigned(consumer, partitions)
        self.health.update(partitions=len(self.assigned), broker_reachable=True)
        self.log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch in flight (publish + commit) before giving partitions away: no duplicates."""
        revoked = {(p.topic, p.partition) for p in partitions}
        inflight = self._inflight
        if inflight is not None and not inflight.finished:
            try:
                inflight.future.result(timeout=self.settings.inference_timeout_s)
            except Exception:  # failed or hung: left uncommitted, the next owner reads the batch again
                inflight.finished = True
            else:
                self._finish(consumer, inflight)
        self._mark_finished(consumer, revoked)
        self._forget(revoked)
        self.log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self._forget(lost)
        self.log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _mark_finished(self, consumer: Consumer, partitions: set[tuple[str, int]]) -> None:
        """Leaving partitions cleanly: the offsets last committed carry no unfinished attempt any more."""
        if self.settings.exactly_once:
            return  # offsets belong to transactions there; a stale attempt costs one slower pass, nothing else
        offsets = self.crashes.marked(self.crashes.last_committed(partitions), finished=True)
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            self.crashes.remember(offsets)
        except KafkaException as exc:
            self.log.warning("commit_failed", error=exc.args[0].name())

    def _finish_cleanly(self, consumer: Consumer) -> None:
        self._mark_finished(consumer, set(self.assigned))

    def _drop_queued(self, partitions: set[tuple[str, int]]) -> None:
        self._carry = [m for m in self._carry if (m.topic(), m.partition()) not in partitions]

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions revoked or lost: their queued messages belong to the next owner."""
        self._drop_queued(partitions)
        self.assigned.difference_update(partitions)
        self._epochs.update(partitions)
        self.crashes.forget(partitions)
        self.health.update(partitions=len(self.assigned))
        if self.metrics is not None:
            self.metrics.forget_partitions(list(partitions))

    def _shutdown_worker(self) -> None:
        self._worker.shutdown(wait=self._hung is None)

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
        tp = partition_of(m)
        last[tp] = max(last.get(tp, -1), offset_of(m))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _in_offset_order(messages: Sequence[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: (m.topic(), m.partition(), m.offset()))


def _in_source_order(records: Sequence[OutputRecord]) -> list[OutputRecord]:
    return sorted(records, key=lambda r: (r.source.topic() or "", r.source.partition() or 0, r.source.offset() or 0))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
