"""How the runner takes a micro-batch: what is queued at once, a linger only to fill the first forward pass."""

from __future__ import annotations

from types import SimpleNamespace

from consumer.runner import Runner
from consumer.settings import Settings
from tests.fakes import FakeMessage, inquiry


class QueuedConsumer:
    """consume(n, timeout) as librdkafka's: up to n of what is queued now; when less is queued, what arrives
    before the timeout (here: the ``arriving`` messages, as if they came in during the wait)."""

    def __init__(self, queued: int, arriving: int = 0):
        self.queued = [self._message(i) for i in range(queued)]
        self.arriving = [self._message(queued + i) for i in range(arriving)]
        self.calls: list[tuple[int, float]] = []

    @staticmethod
    def _message(offset: int) -> FakeMessage:
        return FakeMessage(inquiry(f"e-{offset}", "track my order"), _offset=offset)

    def consume(self, count: int, timeout: float) -> list[FakeMessage]:
        self.calls.append((count, timeout))
        if len(self.queued) < count and timeout > 0:
            self.queued += self.arriving
            self.arriving = []
        taken, self.queued = self.queued[:count], self.queued[count:]
        return taken


def runner(pass_size: int, batch_size: int = 256, wait_ms: int = 10) -> Runner:
    processor = SimpleNamespace(model=SimpleNamespace(batch_size=pass_size))
    runner = Runner(Settings(batch_size=batch_size, batch_max_wait_ms=wait_ms), processor)
    runner.assigned = {("inquiries", 0)}
    return runner


def lingered(consumer: QueuedConsumer) -> list[tuple[int, float]]:
    return [(count, timeout) for count, timeout in consumer.calls if 0 < timeout < Runner.IDLE_POLL_S]


def test_a_lone_inquiry_lingers_at_most_the_wait_to_fill_one_pass():
    consumer = QueuedConsumer(queued=1, arriving=3)
    batch = runner(pass_size=16)._take_batch(consumer)
    assert len(batch) == 4  # what came in during the linger joined the batch
    assert lingered(consumer) == [(15, 0.01)]  # asked for the rest of one pass, for at most 10 ms


def test_a_full_pass_queued_is_taken_without_lingering():
    consumer = QueuedConsumer(queued=40, arriving=100)
    batch = runner(pass_size=16)._take_batch(consumer)
    assert len(batch) == 40 and lingered(consumer) == []  # more than a pass queued: no wait for more


def test_a_backlog_fills_whole_batches():
    consumer = QueuedConsumer(queued=1000)
    assert len(runner(pass_size=16, batch_size=256)._take_batch(consumer)) == 256
    assert lingered(consumer) == []


def test_a_gpu_pass_is_the_whole_batch_so_it_lingers_to_fill_the_batch():
    consumer = QueuedConsumer(queued=40, arriving=300)
    batch = runner(pass_size=256, batch_size=256)._take_batch(consumer)
    assert len(batch) == 256 and lingered(consumer) == [(216, 0.01)]


def test_no_linger_when_the_wait_is_zero():
    consumer = QueuedConsumer(queued=1, arriving=3)
    assert len(runner(pass_size=16, wait_ms=0)._take_batch(consumer)) == 1 and lingered(consumer) == []


def test_a_batch_smaller_than_a_pass_lingers_for_the_batch_only():
    consumer = QueuedConsumer(queued=1, arriving=50)
    batch = runner(pass_size=16, batch_size=8)._take_batch(consumer)
    assert len(batch) == 8 and lingered(consumer) == [(7, 0.01)]


def test_the_pass_size_follows_the_served_model_and_falls_back_to_the_batch_size():
    served = runner(pass_size=16)
    assert served._pass_size() == 16
    served.processor.model = SimpleNamespace(batch_size=32)  # a hot reload swaps the model
    assert served._pass_size() == 32
    served.processor.model = SimpleNamespace()  # a model that does not say: linger to fill the batch, as before
    assert served._pass_size() == 256
