"""An independent Kafka client for the tests (aiokafka: not the project's confluent-kafka code)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, list]], max_request_size: int = 1 << 20
) -> None:
    """Send (key, value, headers) records in order and wait for every acknowledgement."""

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=max_request_size)
        await producer.start()
        try:
            futures = [await producer.send(topic, value=v, key=k, headers=h or []) for k, v, h in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(go())


def consume(
    bootstrap: str,
    topics: list[str],
    expected: int,
    timeout_s: float = 120.0,
    settle_s: float = 2.0,
    abort: Callable[[], bool] | None = None,
) -> list[Record]:
    """Read the topics from the beginning until ``expected`` records arrived (then ``settle_s`` more for extras).

    ``abort`` is checked between polls: when it returns true (say, the service died) reading stops.
    """

    async def go():
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )  # aborted transactions stay unseen
        await consumer.start()
        found: list[Record] = []
        deadline = time.monotonic() + timeout_s
        settle_until = None
        try:
            while time.monotonic() < deadline and not (abort and abort()):
                if settle_until is None and len(found) >= expected:
                    settle_until = time.monotonic() + settle_s
                if settle_until is not None and time.monotonic() >= settle_until:
                    break
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    for m in messages:
                        found.append(Record(tp.topic, tp.partition, m.offset, m.key, m.value, list(m.headers or [])))
        finally:
            try:
                await consumer.stop()
            except KafkaError:  # a fetch still in flight on a connection the broker closed: what was read stands
                pass
        return found

    return asyncio.run(go())


def write_values(bootstrap: str, topic: str, count: int) -> None:
    """Create ``topic`` with one partition and write b"m0" .. b"m{count-1}" to it."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: the future fails once the client is collected
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, f"m{i}".encode())
    assert producer.flush(30) == 0


def read_values(consumer, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    """Up to ``count`` values of partition 0 of ``topic`` from its start, read with ``consumer`` (then closed)."""
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
    finally:
        consumer.close()
    return values
