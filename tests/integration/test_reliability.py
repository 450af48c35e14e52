"""Guarantees under crashes, restarts, rebalances and a slow model, against the real (embedded) broker.

Each test streams inquiries from an independent client (aiokafka) while `triage run` processes are killed,
stopped or joined, then reconciles: every event_id in auto ∪ human ∪ DLQ, duplicates counted and
bounded, order per key kept.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.harness import Reconciliation, Service, inquiries, read_outputs, wait_for_topics, wait_until
from tests.kafka_client import consume, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 16
PARTITIONS = 3


def stream(bootstrap: str, topic: str, records: list, rate_per_s: float) -> threading.Thread:
    """Produce records in chunks at about ``rate_per_s`` from a background thread."""

    def run():
        chunk = max(1, int(rate_per_s / 10))
        for start in range(0, len(records), chunk):
            began = time.monotonic()
            produce(bootstrap, topic, records[start:start + chunk])
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def reconcile_until_complete(bootstrap, topics, expected: set[str], timeout_s: float = 180) -> Reconciliation:
    deadline = time.monotonic() + timeout_s
    while True:
        result = Reconciliation.of(expected, read_outputs(bootstrap, topics, len(expected), timeout_s=30, settle_s=1))
        if not result.lost or time.monotonic() > deadline:
            return result
        time.sleep(1)


def start(bootstrap, model_dir, topics, tmp_path, name: str) -> Service:
    return Service(bootstrap, model_dir, topics, tmp_path / f"{name}.log", batch_size=BATCH,
                   topic_partitions=PARTITIONS)


def test_kill9_mid_stream_then_restart_loses_nothing(bootstrap_servers, tiny_model_dir, topics, tmp_path):
    records = inquiries(0, 2000)
    first = start(bootstrap_servers, tiny_model_dir, topics, tmp_path, "first")
    wait_for_topics(bootstrap_servers, list(topics.values())[:4], service=first)
    producer = stream(bootstrap_servers, topics["input_topic"], records, rate_per_s=400)
    wait_until(lambda: first.routed_count() >= 300, 90, "the first service to route 300")
    first.kill9()
    routed_before_kill = first.routed_count()
    second = start(bootstrap_servers, tiny_model_dir, topics, tmp_path, "second")
    producer.join(60)
    result = reconcile_until_complete(bootstrap_servers, topics, {f"ev-{i}" for i in range(2000)})
    assert second.terminate() == 0
    assert routed_before_kill < 2000, "the kill must land mid-stream"
    assert not result.lost
    assert result.duplicates <= BATCH * PARTITIONS, result.duplicates
    assert not result.order_violations


def test_sigterm_mid_stream_exits_zero_then_restart_has_no_duplicates(bootstrap_servers, tiny_model_dir, topics,
                                                                      tmp_path):
    records = inquiries(0, 2000)
    first = start(bootstrap_servers, tiny_model_dir, topics, tmp_path, "first")
    wait_for_topics(bootstrap_servers, list(topics.values())[:4], service=first)
    producer = stream(bootstrap_servers, topics["input_topic"], records, rate_per_s=400)
    wait_until(lambda: first.routed_count() >= 300, 90, "the first service to route 300")
    began = time.monotonic()
    assert first.terminate(timeout_s=30) == 0
    stop_seconds = time.monotonic() - began
    routed_before_stop = first.routed_count()
    second = start(bootstrap_servers, tiny_model_dir, topics, tmp_path, "second")
    producer.join(60)
    result = reconcile_until_complete(bootstrap_servers, topics, {f"ev-{i}" for i in range(2000)})
    assert second.terminate() == 0
    assert routed_before_stop < 2000, "the stop must land mid-stream"
    assert stop_seconds < 30
    assert not result.lost
    assert result.duplicates == 0
    assert not result.order_violations


def test_consumer_joining_and_leaving_mid_stream(bootstrap_servers, tiny_model_dir, topics, tmp_path):
    records = inquiries(0, 2400)
    first = start(bootstrap_servers, tiny_model_dir, topics, tmp_path, "first")
    wait_for_topics(bootstrap_servers, list(topics.values())[:4], service=first)
    producer = stream(bootstrap_servers, topics["input_topic"], records, rate_per_s=300)
    wait_until(lambda: first.routed_count() >= 200, 90, "the first service to route 200")
    second = start(bootstrap_servers, tiny_model_dir, topics, tmp_path, "second")
    wait_until(lambda: second.routed_count() >= 50, 90, "the second member to take partitions and route")
    assert second.terminate() == 0  # leaves the group: its partitions go back to the first
    producer.join(60)
    result = reconcile_until_complete(bootstrap_servers, topics, {f"ev-{i}" for i in range(2400)})
    assert first.terminate() == 0
    assert not result.lost
    assert result.duplicates <= BATCH * PARTITIONS, result.duplicates
    assert not result.order_violations
    events = [line["event"] for line in first.log_lines()]
    assert "partitions_revoked" in events and events.count("partitions_assigned") >= 2


def test_service_survives_a_broker_restart(tiny_model_dir, topics, tmp_path):
    from consumer.broker import EmbeddedBroker, free_port

    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    bootstrap = broker.bootstrap_servers
    service = start(bootstrap, tiny_model_dir, topics, tmp_path, "service")
    try:
        wait_for_topics(bootstrap, list(topics.values())[:4], service=service)
        produce(bootstrap, topics["input_topic"], inquiries(0, 50))
        before = reconcile_until_complete(bootstrap, topics, {f"ev-{i}" for i in range(50)}, timeout_s=90)
        assert not before.lost
        broker.stop()  # memory storage: topics, offsets and group state are gone
        time.sleep(3)
        broker = EmbeddedBroker(port=port).start()
        assert service.alive()
        produce(bootstrap, topics["input_topic"], inquiries(50, 50))
        after = reconcile_until_complete(bootstrap, topics, {f"ev-{i}" for i in range(50, 100)}, timeout_s=120)
        assert not after.lost, f"lost after the restart: {sorted(after.lost)[:5]}"
        assert service.terminate() == 0
    finally:
        if service.alive():
            service.kill9()
        broker.stop()


class SlowModel:
    """Delegates to a real model, but every batch takes longer than max.poll.interval.ms."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds, self.versions = inner, seconds, inner.versions

    def predict(self, texts):
        time.sleep(self.seconds)
        return self.inner.predict(texts)


def test_inference_slower_than_max_poll_interval_keeps_membership(bootstrap_servers, tiny_model, topics, tmp_path):
    from consumer.app import build_processor, prepare_topics
    from consumer.runner import Runner
    from consumer.settings import Settings

    settings = Settings(bootstrap_servers=bootstrap_servers, session_timeout_ms=6000, max_poll_interval_ms=6000,
                        batch_size=20, topic_partitions=PARTITIONS, **topics)
    prepare_topics(settings)
    produce(bootstrap_servers, settings.input_topic, inquiries(0, 40))
    runner = Runner(settings, build_processor(settings, SlowModel(tiny_model, seconds=8.0)))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        result = reconcile_until_complete(bootstrap_servers, topics, {f"ev-{i}" for i in range(40)}, timeout_s=150)
    finally:
        runner.stop.set()
        thread.join(60)
    assert not result.lost
    assert result.duplicates == 0, "a member evicted for slowness would re-deliver its batch"
    assert runner.totals["size"] == 40
