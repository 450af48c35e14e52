"""Hot reload: a refused version is tried again later, with a growing delay."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from consumer.errors import ConfigError
from consumer.reload import RETRY_FIRST_S, RETRY_MAX_S, ModelReloader
from consumer.routing import RoutingPolicy
from consumer.settings import Settings
from model import TriageModel
from model.artifacts import read_manifest, write_manifest


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def models(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny artifacts that a test may bump to a new version."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "models"))


def _settle(reloader: ModelReloader) -> None:
    """Let the loader thread finish, then let the reloader take its result."""
    if reloader._pending is not None:
        reloader._pending[1].exception(timeout=60)
        reloader.tick()


def test_a_refused_version_is_tried_again_with_backoff_then_served(models):
    clock = Clock()
    processor = SimpleNamespace(model=TriageModel.load(models), policy=RoutingPolicy.default())
    attempts = []

    def load():
        attempts.append(clock.now)
        if len(attempts) <= 2:
            raise OSError("model.safetensors: truncated (still being copied)")
        return TriageModel.load(models)

    refused = []
    reloader = ModelReloader(
        Settings(model_dir=models, reload_interval_s=1),
        processor,
        load,
        on_refuse=lambda: refused.append(clock.now),
        clock=clock,
    )
    write_manifest(models / "intent", read_manifest(models / "intent").model_copy(update={"version": "intent-v2"}))

    clock.now += 2
    reloader.tick()
    _settle(reloader)
    assert len(attempts) == 1 and len(refused) == 1
    assert processor.model.versions.intent == "intent-tiny-test-0", "the running model keeps serving"

    retry_at = reloader.refused[reloader._on_disk()][1]
    while clock.now + 1 < retry_at:  # looking every second: nothing is tried before the delay is over
        clock.now += 1
        reloader.tick()
        assert reloader._pending is None
    clock.now = retry_at
    reloader.tick()
    _settle(reloader)
    assert len(attempts) == 2 and len(refused) == 2
    assert reloader.refused[reloader._on_disk()][1] - clock.now == 2 * RETRY_FIRST_S, "the delay doubles"

    clock.now += 2 * RETRY_FIRST_S + 1
    reloader.tick()
    _settle(reloader)
    assert len(attempts) == 3
    assert processor.model.versions.intent == "intent-v2" and not reloader.refused
    reloader.close()


def test_the_retry_delay_doubles_up_to_its_cap(models):
    clock = Clock()

    def load():
        raise MemoryError("short of memory")

    processor = SimpleNamespace(model=TriageModel.load(models), policy=RoutingPolicy.default())
    reloader = ModelReloader(Settings(model_dir=models, reload_interval_s=1), processor, load, clock=clock)
    write_manifest(models / "sentiment", read_manifest(models / "sentiment").model_copy(update={"version": "s-v2"}))
    delays = []
    for _ in range(8):
        clock.now = max(clock.now + 1, reloader.refused.get(reloader._on_disk(), (0, 0.0))[1])
        reloader.tick()
        _settle(reloader)
        delays.append(reloader.refused[reloader._on_disk()][1] - clock.now)
    assert delays == [min(RETRY_MAX_S, RETRY_FIRST_S * 2**n) for n in range(8)] and delays[-1] == RETRY_MAX_S
    reloader.close()


def test_a_model_for_another_taxonomy_is_refused_and_the_running_one_kept(models):
    """The built-in policy names every Bitext intent: a model where one is renamed does not fit it."""
    clock = Clock()
    processor = SimpleNamespace(model=TriageModel.load(models), policy=RoutingPolicy.default())
    reloader = ModelReloader(
        Settings(model_dir=models, reload_interval_s=1), processor, lambda: TriageModel.load(models), clock=clock
    )
    manifest = read_manifest(models / "intent")
    labels = ["product_question" if label == "review" else label for label in manifest.labels]
    categories = {("product_question" if k == "review" else k): v for k, v in manifest.categories.items()}
    renamed = {"version": "intent-v2", "labels": labels, "categories": categories}
    write_manifest(models / "intent", manifest.model_copy(update=renamed))
    config = json.loads((models / "intent" / "config.json").read_text())
    config["id2label"] = dict(enumerate(labels))
    config["label2id"] = {label: i for i, label in enumerate(labels)}
    (models / "intent" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="review.*product_question"):
        processor.policy.check_fits(TriageModel.load(models))
    clock.now += 2
    reloader.tick()
    _settle(reloader)
    assert reloader._on_disk() in reloader.refused
    assert processor.model.versions.intent == "intent-tiny-test-0", "the running model keeps serving"
    reloader.close()
