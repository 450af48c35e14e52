"""An in-memory Kafka for the runner's failure paths: what a real broker cannot be made to do on cue (a rebalance
in the middle of a batch, a seek or commit that fails, a delivery that times out, a commit without an answer).

The fakes follow confluent-kafka's calls as the runner uses them; faults are injected with the ``fail_*``
fields and the ``during_inference`` hook.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from tests.fakes import FakeMessage, inquiry

TP = tuple[str, int]


@dataclass
class FakeBroker:
    topic: str = "inquiries"
    partitions: int = 2
    keeps_metadata: bool = True  # Kafka keeps commit metadata; some brokers (the embedded one) drop it
    logs: dict[TP, list[FakeMessage]] = field(default_factory=dict)
    committed: dict[TP, tuple[int, str | None]] = field(default_factory=dict)
    outputs: list[tuple[str, bytes | None, bytes | None, list]] = field(default_factory=list)  # read_committed view
    # faults, shared by every producer the service creates: one error code per flush that has records
    fail_flushes: list[int] = field(default_factory=list)
    # a transaction commit that the broker applies but never answers (the client times out and says so)
    commit_unanswered: bool = False

    def send(self, count: int, key: Callable[[int], bytes] = lambda i: f"customer-{i % 7}".encode()) -> None:
        for i in range(count):
            partition = i % self.partitions
            log = self.logs.setdefault((self.topic, partition), [])
            log.append(
                FakeMessage(
                    inquiry(f"e-{partition}-{len(log)}", "where is my order"),
                    _key=key(i),
                    _topic=self.topic,
                    _partition=partition,
                    _offset=len(log),
                )
            )

    def delivered(self) -> list[tuple[int, int]]:
        """(partition, offset) of the input behind each output record, in the order readers see them."""
        out = []
        for topic, value, _key, headers in self.outputs:
            if topic.endswith("dlq"):
                found = dict(headers)
                out.append((int(found["triage.source.partition"]), int(found["triage.source.offset"])))
            else:
                _, partition, offset = orjson.loads(value)["event_id"].split("-")
                out.append((int(partition), int(offset)))
        return out

    def dead_letters(self) -> list[dict[str, bytes]]:
        return [dict(headers) for topic, _v, _k, headers in self.outputs if topic.endswith("dlq")]

    def total(self) -> int:
        return sum(len(log) for log in self.logs.values())

    def committed_offsets(self) -> dict[TP, int]:
        return {tp: offset for tp, (offset, _meta) in self.committed.items()}


class FakeConsumer:
    def __init__(self, broker: FakeBroker):
        self.broker = broker
        self.callbacks: dict[str, Callable] = {}
        self.assigned: list[TP] = []
        self.positions: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.stored: dict[TP, int] = {}
        self.fail_seek = False
        self.fail_commits = 0  # the next N commits raise
        self.during_inference: Callable[[FakeConsumer], None] | None = None  # called from a poll while paused
        self.closed = False
        self.generation = 0

    # group membership
    def subscribe(self, _topics, on_assign=None, on_revoke=None, on_lost=None):
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._pending = [(self.broker.topic, p) for p in range(self.broker.partitions)]

    def _assign_pending(self) -> None:
        if not self._pending:
            return
        tps, self._pending = self._pending, []
        self.generation += 1
        for tp in tps:
            self.positions[tp] = self.broker.committed.get(tp, (0, None))[0]
        self.assigned += tps
        self.callbacks["assign"](self, [TopicPartition(t, p) for t, p in tps])

    def revoke(self, tps: list[TP], lost: bool = False) -> None:
        """A rebalance takes ``tps`` away (``lost``: the member was already out of the group)."""
        self.callbacks["lost" if lost else "revoke"](self, [TopicPartition(t, p) for t, p in tps])
        self.assigned = [tp for tp in self.assigned if tp not in tps]
        self.paused -= set(tps)

    def reassign(self, tps: list[TP]) -> None:
        self._pending = list(tps)

    def consume(self, count: int, timeout: float):
        self._assign_pending()
        if self.paused and self.during_inference is not None:
            hook, self.during_inference = self.during_inference, None
            hook(self)
        out = []
        for tp in self.assigned:
            if tp in self.paused:
                continue
            log = self.broker.logs.get(tp, [])
            while self.positions[tp] < len(log) and len(out) < count:
                out.append(log[self.positions[tp]])
                self.positions[tp] += 1
        if not out and timeout:
            time.sleep(min(timeout, 0.01))
        return out

    def assignment(self):
        return [TopicPartition(t, p) for t, p in self.assigned]

    def pause(self, partitions):
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions):
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def seek(self, tp: TopicPartition):
        if self.fail_seek:
            raise KafkaException(KafkaError(KafkaError._STATE, "erroneous state"))
        self.positions[(tp.topic, tp.partition)] = tp.offset

    # offsets
    def store_offsets(self, offsets):
        self.stored.update({(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in offsets})

    def commit(self, offsets=None, asynchronous=True):
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalance in progress"))
        if offsets is not None:
            values = {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in offsets}
        else:
            values, self.stored = dict(self.stored), {}
        for tp, (offset, metadata) in values.items():
            self.broker.committed[tp] = (offset, metadata if self.broker.keeps_metadata else None)

    def committed(self, tps, timeout=None):
        out = []
        for tp in tps:
            offset, metadata = self.broker.committed.get((tp.topic, tp.partition), (-1001, None))
            extra = {"metadata": metadata} if metadata is not None else {}
            out.append(TopicPartition(tp.topic, tp.partition, offset, **extra))
        return out

    def consumer_group_metadata(self):
        return ("group", self.generation)

    def get_watermark_offsets(self, tp, cached=False):
        return 0, len(self.broker.logs.get((tp.topic, tp.partition), []))

    def close(self):
        self.closed = True


class FakeProducer:
    """Delivers on flush, failing as the broker's ``fail_flushes`` say; transactions keep outputs and offsets
    apart until committed."""

    def __init__(self, broker: FakeBroker, transactional: bool = False):
        self.broker = broker
        self.transactional = transactional
        self.queued: list = []
        self.open: list = []
        self.open_offsets: dict[TP, tuple[int, str | None]] = {}
        self.transactions = {"begun": 0, "committed": 0, "aborted": 0}
        self.lock = threading.Lock()

    def init_transactions(self, _timeout):
        pass

    def begin_transaction(self):
        self.transactions["begun"] += 1
        self.open, self.open_offsets = [], {}

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        self.queued.append((topic, value, key, list(headers or []), on_delivery))

    def flush(self, _timeout=None):
        queued, self.queued = self.queued, []
        code = self.broker.fail_flushes.pop(0) if self.broker.fail_flushes and queued else None
        for topic, value, key, headers, callback in queued:
            if code is not None:
                callback(KafkaError(code), None)
                continue
            (self.open if self.transactional else self.broker.outputs).append((topic, value, key, headers))
            callback(None, None)
        return 0

    def poll(self, _timeout=None):
        return 0

    def purge(self, in_queue=True, in_flight=False):
        self.queued = []

    def send_offsets_to_transaction(self, offsets, _metadata, _timeout):
        self.open_offsets = {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in offsets}

    def commit_transaction(self, _timeout):
        self._apply()
        if self.broker.commit_unanswered:
            time.sleep(0.05)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))

    def _apply(self):
        if not self.open and not self.open_offsets:
            return
        self.broker.outputs += self.open
        for tp, (offset, metadata) in self.open_offsets.items():
            self.broker.committed[tp] = (offset, metadata if self.broker.keeps_metadata else None)
        self.open, self.open_offsets = [], {}
        self.transactions["committed"] += 1

    def abort_transaction(self, _timeout):
        self.open, self.open_offsets, self.queued = [], {}, []
        self.transactions["aborted"] += 1
