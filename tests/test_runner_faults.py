"""The runner under faults a real broker cannot be made to produce on cue (tests/fake_kafka.py): every input
ends on exactly one output topic or the DLQ, and what cannot be cured stops the service with its reason."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from consumer.errors import PublishRefused, TransactionUnknown, TriageError
from consumer.instance import transactional_id
from consumer.metrics import Health, Metrics
from consumer.processor import Processor, Topics
from consumer.resilience import Backoff, Breaker
from consumer.routing import RoutingPolicy
from consumer.runner import Runner
from consumer.settings import Settings
from tests.fake_kafka import FakeBroker, FakeConsumer, FakeProducer
from tests.fakes import FakeMessage, inquiry

ALL = [("inquiries", 0), ("inquiries", 1)]


class Died(BaseException):
    """Stands for the process dying mid-batch (out-of-memory kill, native crash): nothing after it runs."""


class ScriptedModel:
    """The tiny model, with a script of what each predict call does first: "ok", "raise", "hang:SECONDS"."""

    def __init__(self, model, script: list[str] = (), poison: str | None = None):
        self.model, self.script, self.poison = model, list(script), poison
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, texts):
        self.calls += 1
        if self.poison is not None and self.poison in texts:
            raise Died
        step = self.script.pop(0) if self.script else "ok"
        if step == "raise":
            raise RuntimeError("CUDA error: device-side assert triggered")
        if step.startswith("hang:"):
            time.sleep(float(step.split(":")[1]))
        return self.model.predict(texts)


class Service:
    """A runner on the fake broker, in a thread."""

    def __init__(
        self, broker: FakeBroker, model, tmp_path, on_consumer: Callable[[FakeConsumer], None] = None, **settings
    ):
        defaults = dict(
            state_dir=tmp_path,
            batch_size=8,
            batch_max_wait_ms=0,
            retry_backoff_ms=10,
            retry_backoff_max_ms=40,
            breaker_cooldown_s=0.5,
            model_failure_limit=3,
            inference_timeout_s=5.0,
            max_poll_interval_ms=1000,
            delivery_timeout_ms=1000,
            stall_timeout_s=60,
            metrics_port=-1,
        )
        self.settings = Settings(**{**defaults, **settings})
        self.broker, self.consumers, self.producers = broker, [], []
        self.on_consumer = on_consumer
        self.metrics = Metrics()
        self.health = Health(stall_timeout_s=self.settings.stall_timeout_s)
        self.health.update(model_loaded=True)
        self.metrics.watch(self.health)
        processor = Processor(
            model=model,
            policy=RoutingPolicy.default(),
            topics=Topics(self.settings.auto_topic, self.settings.human_topic, self.settings.dlq_topic),
        )
        self.runner = Runner(
            self.settings,
            processor,
            metrics=self.metrics,
            health=self.health,
            consumer_factory=self._consumer,
            producer_factory=self._producer,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _consumer(self, _config) -> FakeConsumer:
        consumer = FakeConsumer(self.broker)
        if self.on_consumer is not None:
            self.on_consumer(consumer)
        self.consumers.append(consumer)
        return consumer

    def _producer(self, config) -> FakeProducer:
        producer = FakeProducer(self.broker, transactional="transactional.id" in config)
        self.producers.append(producer)
        return producer

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 (the test looks at what stopped it)
            self.error = exc

    def wait(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.thread.is_alive():
                raise AssertionError(f"the service stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting")
            time.sleep(0.01)

    def died(self, timeout: float = 20.0) -> BaseException:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service should have stopped"
        return self.error

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def everything_once(broker: FakeBroker) -> bool:
    return Counter(broker.delivered()) == Counter(
        (p, o) for (_t, p), log in broker.logs.items() for o in range(len(log))
    )


def all_committed(broker: FakeBroker) -> bool:
    return all(broker.committed.get(tp, (0, None))[0] == len(log) for tp, log in broker.logs.items())


def settled(broker: FakeBroker) -> Callable[[], bool]:
    return lambda: all_committed(broker) and len(broker.delivered()) >= broker.total()


@pytest.fixture()
def broker() -> FakeBroker:
    broker = FakeBroker()
    broker.send(40)
    return broker


# -- publishing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_transient_publish_failures_are_retried_with_backoff_and_deliver_everything_once(
    broker, tiny_model, tmp_path, guarantee
):
    broker.fail_flushes = [KafkaError._MSG_TIMED_OUT] * 3
    service = Service(broker, tiny_model, tmp_path, processing_guarantee=guarantee)
    service.wait(settled(broker))
    service.stop()
    assert everything_once(broker)
    assert service.metrics.publish_retries._value.get() == 3
    assert service.metrics.publish_failures.labels(kind="transient")._value.get() == 3


def test_backoff_doubles_up_to_its_cap_with_jitter():
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next() for _ in range(8)]
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(0.8 * n <= d <= 1.2 * n for d, n in zip(delays, nominal))
    backoff.reset()
    assert backoff.next() <= 0.12


@pytest.mark.parametrize("code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART])
def test_a_permanent_publish_error_stops_the_service_uncommitted_with_its_reason(broker, tiny_model, tmp_path, code):
    broker.fail_flushes = [code]
    service = Service(broker, tiny_model, tmp_path)
    error = service.died()
    assert isinstance(error, PublishRefused) and KafkaError(code).name() in str(error)
    assert broker.outputs == [] and set(broker.committed_offsets().values()) <= {0}, "nothing committed past input"
    assert service.metrics.publish_failures.labels(kind="permanent")._value.get() == 1
    ready, detail = service.health.readiness()
    assert not ready and detail["checks"]["publishing_ok"] is False


def test_readiness_turns_red_when_records_wait_without_progress_and_green_again(broker, tiny_model, tmp_path):
    broker.fail_flushes = [KafkaError._TRANSPORT] * 10**6
    service = Service(broker, tiny_model, tmp_path, stall_timeout_s=0.3, retry_backoff_max_ms=20)
    service.wait(lambda: not service.health.readiness()[1]["checks"]["progressing"])
    assert service.health.unfinished_age() >= 0.3
    assert service.metrics.registry.get_sample_value("triage_oldest_unfinished_seconds") >= 0.3
    broker.fail_flushes = []
    service.wait(settled(broker))
    service.wait(lambda: service.health.readiness()[0])
    service.stop()
    assert everything_once(broker)


def test_the_oldest_unfinished_gauge_reads_the_health_state():
    now = [100.0]
    health = Health(stall_timeout_s=5, clock=lambda: now[0])
    metrics = Metrics()
    metrics.watch(health)
    health.update(unfinished_since=90.0)
    assert metrics.registry.get_sample_value("triage_oldest_unfinished_seconds") == 10.0
    assert health.readiness()[1]["checks"]["progressing"] is False
    health.update(unfinished_since=None)
    assert metrics.registry.get_sample_value("triage_oldest_unfinished_seconds") == 0.0


# -- the model --------------------------------------------------------------------------------------------


def test_a_model_that_fails_every_batch_stops_consuming_says_why_and_resumes_when_it_answers(
    broker, tiny_model, tmp_path
):
    model = ScriptedModel(tiny_model, ["raise"] * 4)  # three open the breaker, the first probe fails too
    service = Service(broker, model, tmp_path, breaker_cooldown_s=0.4)
    service.wait(lambda: not service.health.model_ok)
    ready, detail = service.health.readiness()
    assert not ready and "RuntimeError" in detail["model_problem"]
    assert broker.outputs == [] and model.calls <= 3
    time.sleep(0.2)
    assert model.calls <= 4, "no retrying in a tight loop while the breaker is open"
    service.wait(settled(broker))
    service.wait(lambda: service.health.model_ok)
    service.stop()
    assert everything_once(broker)
    assert service.metrics.model_failures._value.get() == 4
    assert Breaker(3, 1).allow()


def test_an_inference_that_hangs_times_out_and_its_batch_is_retried_once(broker, tiny_model, tmp_path):
    model = ScriptedModel(tiny_model, ["hang:1.5"])
    service = Service(broker, model, tmp_path, inference_timeout_s=0.3)
    service.wait(settled(broker))
    service.stop()
    assert everything_once(broker), "the hung call's answer is never published"
    assert service.metrics.model_failures._value.get() == 1


# -- the group --------------------------------------------------------------------------------------------


def test_a_rebalance_during_a_batch_finishes_it_before_the_partitions_go(broker, tiny_model, tmp_path):
    def rebalance(consumer: FakeConsumer) -> None:
        consumer.revoke(ALL)
        consumer.reassign(ALL)

    model = ScriptedModel(tiny_model, ["hang:0.5"])
    service = Service(broker, model, tmp_path, on_consumer=lambda c: setattr(c, "during_inference", rebalance))
    service.wait(settled(broker))
    service.stop()
    assert everything_once(broker)
    assert service.consumers[0].generation == 2, "the rebalance happened"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_nothing_is_published_for_partitions_lost_during_a_batch(broker, tiny_model, tmp_path, guarantee):
    def lose(consumer: FakeConsumer) -> None:
        consumer.revoke(ALL, lost=True)
        consumer.reassign(ALL)

    model = ScriptedModel(tiny_model, ["hang:0.5"])
    service = Service(
        broker,
        model,
        tmp_path,
        processing_guarantee=guarantee,
        on_consumer=lambda c: setattr(c, "during_inference", lose),
    )
    service.wait(settled(broker))
    service.stop()
    assert everything_once(broker), "the lost batch is the new owner's: publishing it here would duplicate it"


def test_a_rewind_that_cannot_seek_stops_the_service_instead_of_committing_past_the_batch(broker, tiny_model, tmp_path):
    broker.fail_flushes = [KafkaError._MSG_TIMED_OUT]
    service = Service(broker, tiny_model, tmp_path, on_consumer=lambda c: setattr(c, "fail_seek", True))
    error = service.died()
    assert isinstance(error, TriageError) and "cannot rewind" in str(error)
    assert set(broker.committed_offsets().values()) <= {0}


def test_a_failed_commit_is_carried_by_the_next_one(broker, tiny_model, tmp_path):
    service = Service(broker, tiny_model, tmp_path, on_consumer=lambda c: setattr(c, "fail_commits", 3))
    service.wait(settled(broker))
    service.stop()
    assert everything_once(broker)


# -- exactly-once -----------------------------------------------------------------------------------------


def test_exactly_once_a_commit_without_an_answer_stops_the_service_instead_of_replaying(broker, tiny_model, tmp_path):
    broker.commit_unanswered = True
    service = Service(broker, tiny_model, tmp_path, processing_guarantee="exactly_once")
    assert isinstance(service.died(), TransactionUnknown)
    first = list(broker.delivered())
    assert first and len(set(first)) == len(first)
    assert all(p.transactions["aborted"] == 0 for p in service.producers), "an abort would replay the batch"
    broker.commit_unanswered = False
    restarted = Service(broker, tiny_model, tmp_path, processing_guarantee="exactly_once")
    restarted.wait(settled(broker))
    restarted.stop()
    assert everything_once(broker), "the restart resumes where the unanswered commit left off"


def test_each_process_gets_a_stable_transactional_id_that_a_restart_takes_over(tmp_path):
    settings = Settings(state_dir=tmp_path, processing_guarantee="exactly_once", group_id="g")
    with transactional_id(settings) as first, transactional_id(settings) as second:
        assert first != second and first.endswith("-0") and second.endswith("-1")
    with transactional_id(settings) as again:
        assert again == first, "a restarted process fences its predecessor by using the same id"
    assert settings.producer_config(first)["transactional.id"] == first
    pinned = Settings(state_dir=tmp_path, processing_guarantee="exactly_once", transactional_id="triage-a")
    with transactional_id(pinned) as chosen:
        assert chosen == "triage-a"


# -- records that kill the process ------------------------------------------------------------------------


@pytest.mark.parametrize("keeps_metadata", [True, False], ids=["commit-metadata", "state-file"])
def test_a_record_that_kills_the_process_is_dead_lettered_after_crash_limit_deaths(
    tiny_model, tmp_path, keeps_metadata
):
    broker = FakeBroker(partitions=1, keeps_metadata=keeps_metadata)
    broker.send(3)
    broker.logs[("inquiries", 0)].append(FakeMessage(inquiry("e-0-3", "KILL ME"), _offset=3))
    broker.send(6)
    model = ScriptedModel(tiny_model, poison="KILL ME")
    deaths = 0
    for _start in range(8):
        service = Service(broker, model, tmp_path, crash_limit=3)
        try:
            service.wait(settled(broker), timeout=10)
        except AssertionError:
            assert isinstance(service.error, Died)
            deaths += 1
            continue
        service.stop()
        break
    # the first death counts against the batch it was in; then the record is taken alone, three times
    assert deaths == 4
    assert everything_once(broker)
    [letter] = broker.dead_letters()
    assert letter["triage.error.stage"] == b"crash" and letter["triage.source.offset"] == b"3"
