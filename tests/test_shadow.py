"""Shadow mode: a candidate model classifies the same batches, routes nothing, and its disagreements are counted."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import orjson
import pytest

from consumer.metrics import Metrics
from consumer.processor import Processor, Topics
from consumer.routing import RoutingPolicy
from consumer.runner import BatchStats
from model import InferenceError, TriageModel
from tests.fakes import FakeMessage
from tests.tiny import worse_intent_copy

TEXTS = ["i want a refund please", "track my order please", "my password please", "can i talk to an agent"]


@pytest.fixture(scope="module")
def shadow_dir(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow")
    worse_intent_copy(tiny_model_dir / "intent", root / "intent")
    shutil.copytree(tiny_model_dir / "sentiment", root / "sentiment")
    return root


def _messages() -> list[FakeMessage]:
    return [FakeMessage(orjson.dumps({"event_id": f"e{i}", "text": text}), _offset=i) for i, text in enumerate(TEXTS)]


def _processor(model, shadow) -> Processor:
    topics = Topics("auto", "human", "dlq")
    return Processor(model, RoutingPolicy.default(), topics, clock=lambda: datetime.now(UTC), shadow=shadow)


def test_the_shadow_model_is_compared_and_never_routes(tiny_model, shadow_dir):
    alone = _processor(tiny_model, None).process(_messages())
    records = _processor(tiny_model, TriageModel.load(shadow_dir)).process(_messages())
    assert [(r.topic, r.value) for r in records] != [] and [r.route for r in records] == [r.route for r in alone]
    assert [orjson.loads(r.value)["triage"]["intent"]["label"] for r in records] == [r.intent for r in alone]
    by_text = dict(zip(TEXTS, records))
    assert by_text["i want a refund please"].intent == "get_refund"
    assert by_text["i want a refund please"].shadow_intent == "track_order"
    assert by_text["my password please"].shadow_intent == "recover_password"

    metrics = Metrics()
    metrics.observe_batch(BatchStats(size=len(records), records=records))
    assert metrics.shadow_compared._value.get() == 4
    assert metrics.shadow_disagreements.labels(kind="intent")._value.get() == 2
    assert metrics.shadow_pairs.labels(serving="get_refund", shadow="track_order")._value.get() == 1


class BrokenModel:
    versions = None

    def predict(self, texts):
        raise InferenceError("model raised RuntimeError")


def test_a_failing_shadow_changes_nothing_but_a_counter(tiny_model):
    alone = _processor(tiny_model, None).process(_messages())
    records = _processor(tiny_model, BrokenModel()).process(_messages())
    assert [(r.route, r.intent) for r in records] == [(r.route, r.intent) for r in alone]
    assert all(r.shadow_failed and r.shadow_intent is None for r in records)
    metrics = Metrics()
    metrics.observe_batch(BatchStats(size=len(records), records=records))
    assert metrics.shadow_failures._value.get() == 1 and metrics.shadow_compared._value.get() == 0


def test_the_service_loads_a_shadow_model_from_settings(tiny_model, shadow_dir):
    from consumer.app import build_processor
    from consumer.settings import Settings

    processor = build_processor(Settings(shadow_model_dir=shadow_dir), tiny_model)
    assert processor.shadow is not None and processor.shadow.versions.intent == "intent-worse"
    assert build_processor(Settings(), tiny_model).shadow is None
