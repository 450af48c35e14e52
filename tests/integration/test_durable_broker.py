"""The broker crashing under a running service, on the embedded broker with durable storage (tests/brokers.py).

With memory storage a broker restart loses everything, so only durable storage can show what the service
does when the broker itself is killed mid-stream with records in flight: every input ends on exactly one
routing topic or the DLQ, none lost, duplicates bounded by one batch per partition per crash.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.brokers import durable_embedded_broker
from tests.harness import (
    Service,
    inquiries,
    reconcile_until_complete,
    wait_for_topics,
    wait_until,
)
from tests.kafka_client import read_values, write_values

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 16
PARTITIONS = 3


def test_records_and_committed_offsets_survive_kill9_of_the_broker(tmp_path):
    with durable_embedded_broker(tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        write_values(bootstrap, "kept", 10)
        reader = group_reader(bootstrap)
        reader.commit(offsets=[TopicPartition("kept", 0, 4)], asynchronous=False)
        reader.close()
        broker.kill()
        broker.start()
        reader = group_reader(bootstrap)
        [committed] = reader.committed([TopicPartition("kept", 0)], timeout=30)
        assert committed.offset == 4, "the group's committed offset survives the crash"
        values = read_values(reader, "kept", 10)
    assert values == [f"m{i}".encode() for i in range(10)]


def group_reader(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kept-readers",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


# Tansu 0.6.0 on s3 storage can answer an idempotent producer's retry after a crash with "duplicate sequence"
# for a batch it did not keep (seen: 2 of 1,500 outputs gone, acknowledged): a broker bug no client can see.
# At-least-once therefore runs with idempotence off here (retries may duplicate, never vanish, and one request
# in flight keeps per-key order); on Kafka the default stays on. Exactly-once needs idempotence.
PRODUCER = {
    "at_least_once": '{"enable.idempotence": "false", "acks": "all", "max.in.flight.requests.per.connection": "1"}',
    "exactly_once": "{}",
}


# Tansu 0.6.0 on s3 storage can leave a fetch unanswered for good when its wait is shorter than a read from the
# store (seen with the service's 20 ms default: nothing consumed for minutes); 100 ms and more flow.
FETCH_WAIT_MS = 250


# Exactly-once through a crash of this broker is not shown here: after the restart Tansu 0.6.0 answers the
# transactional producer's retried batch with "duplicate sequence" (for a batch it did not keep) and then leaves
# the transaction's requests unanswered, so the stream stops (seen in every run). Exactly-once across a clean
# broker restart, member crashes and rebalances is covered by test_reliability.py on the same broker.
@pytest.mark.parametrize(
    "guarantee",
    [
        "at_least_once",
        pytest.param(
            "exactly_once",
            marks=pytest.mark.skip(
                reason="Tansu 0.6.0 stops answering a transactional producer after a crash with batches in flight"
            ),
        ),
    ],
)
def test_kill9_of_the_broker_mid_stream_three_times_loses_nothing(tiny_model_dir, topics, tmp_path, guarantee):
    count, crashes = 600, 3
    with durable_embedded_broker(tmp_path / "tansu.log") as broker:
        result, routed_at_crash = crash_the_broker_under_a_service(
            broker, tiny_model_dir, topics, tmp_path, guarantee, count, crashes
        )
    assert routed_at_crash[-1] < count, "every crash lands mid-stream"
    assert not result.lost, f"lost: {sorted(result.lost)[:5]}"
    assert result.duplicates <= crashes * BATCH * PARTITIONS, result.duplicates
    assert not result.order_violations
    print(f"{guarantee}: sent {count}, broker killed {crashes} times, lost 0, duplicated {result.duplicates}")


def crash_the_broker_under_a_service(broker, tiny_model_dir, topics, tmp_path, guarantee, count, crashes):
    bootstrap = broker.bootstrap_servers
    service = Service(
        bootstrap,
        tiny_model_dir,
        topics,
        tmp_path / "service.log",
        batch_size=BATCH,
        topic_partitions=PARTITIONS,
        processing_guarantee=guarantee,
        state_dir=tmp_path / "state",
        producer_properties=PRODUCER[guarantee],
        fetch_wait_max_ms=FETCH_WAIT_MS,
    )
    try:
        wait_for_topics(bootstrap, list(topics.values())[:4], service=service)
        sender = Sender(bootstrap, topics["input_topic"], inquiries(0, count), rate_per_s=100)
        routed_at_crash = []
        for crash in range(crashes):
            wait_until(
                lambda crash=crash: service.routed_count() >= (crash + 1) * count // (crashes + 2),
                180,
                f"routing before crash {crash + 1}",
            )
            routed_at_crash.append(service.routed_count())
            broker.kill()  # SIGKILL with batches in flight: nothing flushed or closed
            time.sleep(2)
            assert service.alive(), "the service rides out a broker crash"
            broker.start()
        sender.join(180)
        assert sender.undelivered == 0, "the test's own producer got every input in"
        result = reconcile_until_complete(bootstrap, topics, {f"ev-{i}" for i in range(count)})
        assert service.terminate() == 0
    finally:
        if service.alive():
            service.kill9()
    return result, routed_at_crash


class Sender:
    """The contact-centre side: a producer that keeps retrying while the broker is away.

    Not idempotent, for the broker bug described above PRODUCER (an input acknowledged and not kept would count
    as lost here): a retry may send an input twice, which the duplicate bound allows for."""

    def __init__(self, bootstrap: str, topic: str, records: list, rate_per_s: float):
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": False,
                "acks": "all",
                "max.in.flight.requests.per.connection": 1,
                "message.timeout.ms": 120_000,
                "reconnect.backoff.max.ms": 500,
            }
        )
        self.topic, self.records, self.rate_per_s = topic, records, rate_per_s
        self.undelivered = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for key, value, _headers in self.records:
            self.producer.produce(self.topic, value, key=key, on_delivery=self._delivered)
            self.producer.poll(0)
            time.sleep(1 / self.rate_per_s)
        self.producer.flush(150)

    def _delivered(self, error, _message) -> None:
        if error is not None:
            self.undelivered += 1

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the test's producer did not finish"
