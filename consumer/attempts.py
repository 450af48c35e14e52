"""A durable count of the times the service died on a partition's next record, so a record that kills the
process (a native crash, an out-of-memory kill) is dead-lettered instead of crashing every restart.

The count travels with the committed offset: in the commit's metadata where the broker keeps it (Kafka does),
else in a small file per group under ``state_dir``. Each member counts a batch as started (``attempts``) before
it processes the first batch of a partition it was given, and every commit carries the count on. A member
that finds ``attempts`` unfinished starts at the committed offset processes that partition one record at a
time for the next ``batch_size`` records (the crashed batch's span); once a record has ``limit`` unfinished
attempts it goes to the DLQ unprocessed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumer.errors import TriageError

_METADATA = re.compile(r"^triage:a=(\d+);s=(-?\d+)$")
TP = tuple[str, int]


def partition_of(message: Message) -> TP:
    """The (topic, partition) of a consumed record; only error events lack them, and those are never batched."""
    topic, partition = message.topic(), message.partition()
    if topic is None or partition is None:
        raise TriageError("a consumed record without a topic or partition")
    return topic, partition


def offset_of(message: Message) -> int:
    """The offset of a consumed record (see :func:`partition_of`)."""
    offset = message.offset()
    if offset is None:
        raise TriageError("a consumed record without an offset")
    return offset


@dataclass(frozen=True)
class Mark:
    """``attempts`` batches were started at ``offset`` and did not finish; below ``suspect_until`` records go
    one at a time."""

    offset: int
    attempts: int
    suspect_until: int = -1

    def metadata(self) -> str:
        return f"triage:a={self.attempts};s={self.suspect_until}"

    @classmethod
    def parse(cls, offset: int, metadata: str | None) -> Mark | None:
        found = _METADATA.match(metadata or "")
        return cls(offset, int(found[1]), int(found[2])) if found else None


class FileMarks:
    """Marks in one JSON file per consumer group, written atomically; for brokers that drop commit metadata."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, list[int]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, tp: TP) -> Mark | None:
        found = self.load().get(f"{tp[0]}/{tp[1]}")
        return Mark(*found) if isinstance(found, list) and len(found) == 3 else None

    def put(self, marks: dict[TP, Mark]) -> None:
        data = self.load()
        data.update({f"{t}/{p}": [m.offset, m.attempts, m.suspect_until] for (t, p), m in marks.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".marks-")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, self.path)


@dataclass
class Plan:
    """What to do with a batch: ``process`` it, dead-letter ``poisoned`` unprocessed, take ``deferred`` later."""

    process: list[Message] = field(default_factory=list)
    poisoned: list[Message] = field(default_factory=list)
    deferred: list[Message] = field(default_factory=list)


class CrashGuard:
    def __init__(self, limit: int, batch_size: int, state_file: Path):
        self.limit, self.batch_size = limit, batch_size
        self.files = FileMarks(state_file)
        self.log = structlog.get_logger("triage.runner")
        self.marks: dict[TP, Mark] = {}  # as last read or written, per assigned partition
        self.claimed: set[TP] = set()
        self.broker_keeps_metadata: bool | None = None  # learnt from the first claim

    def assigned(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Read the marks of newly assigned partitions (commit metadata, else the state file)."""
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        try:
            committed = consumer.committed(tps, timeout=10) if tps else []
        except KafkaException:
            committed = []
        from_broker = {(c.topic, c.partition): Mark.parse(c.offset, getattr(c, "metadata", None)) for c in committed}
        for tp in ((p.topic, p.partition) for p in partitions):
            mark = from_broker.get(tp) or self.files.get(tp)
            if mark is not None:
                self.marks[tp] = mark
            self.claimed.discard(tp)

    def forget(self, tps: set[TP]) -> None:
        for tp in tps:
            self.marks.pop(tp, None)
            self.claimed.discard(tp)

    def plan(self, consumer: Consumer, batch: Sequence[Message]) -> Plan:
        """Claim partitions met for the first time since assignment; isolate records of suspect partitions."""
        plan = Plan()
        first: dict[TP, int] = {}
        for m in batch:
            first.setdefault(partition_of(m), offset_of(m))
        claims: dict[TP, Mark] = {}
        for tp, offset in first.items():
            if tp in self.claimed:
                continue
            mark = self.marks.get(tp)
            failed = mark.attempts if mark is not None and mark.offset == offset else 0
            until = mark.suspect_until if mark is not None and mark.offset == offset else -1
            if failed:
                until = max(until, offset + self.batch_size)
                self.log.warning(
                    "crashed_here_before",
                    topic=tp[0],
                    partition=tp[1],
                    offset=offset,
                    times=failed,
                    action="dead_letter" if failed >= self.limit else "one_record_at_a_time",
                )
            claims[tp] = Mark(offset, failed + 1, until)
        if claims:
            self._write(consumer, claims)
            self.claimed.update(claims)
        taken: set[TP] = set()
        deferring: set[TP] = set()
        for m in batch:
            tp = partition_of(m)
            mark = self.marks.get(tp)
            if tp in deferring:  # never past a deferred record: offsets are committed in order
                plan.deferred.append(m)
            elif mark is None or offset_of(m) >= mark.suspect_until:
                plan.process.append(m)
            elif tp in taken:
                deferring.add(tp)
                plan.deferred.append(m)
            else:
                taken.add(tp)
                if tp in claims and claims[tp].attempts > self.limit:
                    plan.poisoned.append(m)
                else:
                    plan.process.append(m)
        return plan

    def marked(self, offsets: Sequence[TopicPartition], finished: bool = False) -> list[TopicPartition]:
        """``offsets`` carrying their marks: one attempt started at each (none when ``finished``: a clean stop
        or revoke, with no batch left in flight). Pure: :meth:`remember` them once they are committed."""
        out = []
        for tp in offsets:
            key = (tp.topic, tp.partition)
            until = self.marks[key].suspect_until if key in self.marks else -1
            mark = Mark(tp.offset, 0 if finished else 1, until if tp.offset < until else -1)
            out.append(TopicPartition(tp.topic, tp.partition, tp.offset, mark.metadata()))
        return out

    def remember(self, committed: Sequence[TopicPartition]) -> None:
        """Offsets from :meth:`marked` that were committed."""
        parsed = {(tp.topic, tp.partition): Mark.parse(tp.offset, tp.metadata) for tp in committed}
        marks = {tp: m for tp, m in parsed.items() if m is not None}
        self.marks.update(marks)
        if self.broker_keeps_metadata is False and marks:
            self.files.put(marks)

    def last_committed(self, tps: set[TP]) -> list[TopicPartition]:
        """The offsets this member last committed (or claimed) for ``tps``: never past a record not finished."""
        return [TopicPartition(t, p, self.marks[(t, p)].offset) for t, p in tps if (t, p) in self.marks]

    def _write(self, consumer: Consumer, claims: dict[TP, Mark]) -> None:
        self.marks.update(claims)
        offsets = [TopicPartition(t, p, m.offset, m.metadata()) for (t, p), m in claims.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            if self.broker_keeps_metadata is None:
                back = consumer.committed([TopicPartition(t.topic, t.partition) for t in offsets], timeout=10)
                self.broker_keeps_metadata = all(
                    getattr(b, "metadata", None) == o.metadata for b, o in zip(back, offsets)
                )
                if not self.broker_keeps_metadata:
                    self.log.info("commit_metadata_not_kept", state_file=str(self.files.path))
        except KafkaException as exc:
            self.log.warning("claim_commit_failed", error=exc.args[0].name())
            self.broker_keeps_metadata = False if self.broker_keeps_metadata is None else self.broker_keeps_metadata
        if self.broker_keeps_metadata is False:
            self.files.put(claims)
