"""Metrics, health and hot reload of a real `triage run` process."""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from model.artifacts import read_manifest, write_manifest
from tests.fakes import BAD_RECORDS
from tests.harness import (
    Service,
    get,
    inquiries,
    metrics_port,
    read_outputs,
    samples,
    total,
    wait_for_topics,
    wait_until,
)
from tests.kafka_client import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_metrics_match_an_independent_count_and_readyz_waits_for_assignment(
    bootstrap_servers, tiny_model_dir, topics, tmp_path
):
    service = Service(bootstrap_servers, tiny_model_dir, topics, tmp_path / "service.log", batch_size=16)
    port = metrics_port(service)
    assert get(port, "/healthz")[0] == 200
    readiness = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, body = get(port, "/readyz")
        readiness.append((datetime.now().astimezone(), status, orjson.loads(body)))
        if status == 200:
            break
        time.sleep(0.05)
    assert readiness[0][1] == 503 and readiness[-1][1] == 200
    assigned_at = next(
        datetime.fromisoformat(line["timestamp"])
        for line in service.log_lines()
        if line.get("event") == "partitions_assigned"
    )
    first_ready = next(when for when, status, _ in readiness if status == 200)
    assert first_ready >= assigned_at, "ready only once partitions are assigned"
    assert not readiness[0][2]["checks"]["partitions_assigned"]

    wait_for_topics(bootstrap_servers, list(topics.values())[:4], service=service)
    bad = [(b"bad", value, []) for value, _ in BAD_RECORDS.values()]
    produce(bootstrap_servers, topics["input_topic"], inquiries(0, 150) + bad)
    found = read_outputs(bootstrap_servers, topics, expected=150 + len(bad), timeout_s=120)
    wait_until(lambda: total(samples(port), "triage_events_consumed_total") >= 150 + len(bad), 30, "metrics")
    m = samples(port)
    counts = {
        name: sum(1 for r in found if r.topic == topics[name]) for name in ("auto_topic", "human_topic", "dlq_topic")
    }
    assert total(m, "triage_events_routed_total", route="auto_response") == counts["auto_topic"] > 0
    assert total(m, "triage_events_routed_total", route="human_agent") == counts["human_topic"] > 0
    assert total(m, "triage_dead_letters_total") == counts["dlq_topic"] == len(bad)
    assert total(m, "triage_dead_letters_total", reason="InvalidJson") == 1
    assert total(m, "triage_events_consumed_total") == 150 + len(bad)
    assert total(m, "triage_end_to_end_latency_seconds_count") == 150 + len(bad)
    assert total(m, "triage_batch_size_count") >= 1 and total(m, "triage_inference_seconds_count") >= 1
    assert total(m, "triage_consumer_lag", topic=topics["input_topic"]) == 0
    info = [labels for (name, labels) in m if name == "triage_model_info"]
    assert dict(info[0])["intent"] == "intent-tiny-test-0"
    assert service.terminate() == 0


def bump_version(directory, version: str) -> None:
    manifest = read_manifest(directory)
    write_manifest(directory, manifest.model_copy(update={"version": version}))


def versions_in(records) -> list[str]:
    return [orjson.loads(r.value)["triage"]["model"]["intent"] for r in records if r.value and b'"triage"' in r.value]


def serving_a_copy(bootstrap_servers, tiny_model_dir, topics, tmp_path) -> tuple[Path, Service]:
    """A service reloading a copy of the tiny models every second, shown to route 10 inquiries with them."""
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models)
    service = Service(bootstrap_servers, models, topics, tmp_path / "service.log", batch_size=16, reload_interval_s=1)
    wait_for_topics(bootstrap_servers, list(topics.values())[:4], service=service)
    produce(bootstrap_servers, topics["input_topic"], inquiries(0, 10))
    assert set(versions_in(read_outputs(bootstrap_servers, topics, expected=10))) == {"intent-tiny-test-0"}
    return models, service


def test_hot_reload_swaps_good_models_and_refuses_bad_ones(bootstrap_servers, tiny_model_dir, topics, tmp_path):
    models, service = serving_a_copy(bootstrap_servers, tiny_model_dir, topics, tmp_path)

    bump_version(models / "intent", "intent-v2")
    bump_version(models / "sentiment", "sentiment-v2")
    wait_until(lambda: any(line.get("event") == "model_reloaded" for line in service.log_lines()), 60, "the reload")
    produce(bootstrap_servers, topics["input_topic"], inquiries(10, 10))
    outputs = read_outputs(bootstrap_servers, topics, expected=20)
    assert versions_in(outputs).count("intent-v2") == 10

    (models / "intent" / "model.safetensors").write_bytes(b"not a model")
    bump_version(models / "intent", "intent-v3-broken")
    wait_until(lambda: any(line.get("event") == "model_reload_refused" for line in service.log_lines()), 60, "refusal")
    produce(bootstrap_servers, topics["input_topic"], inquiries(20, 10))
    outputs = read_outputs(bootstrap_servers, topics, expected=30)
    assert versions_in(outputs).count("intent-v2") == 20 and "intent-v3-broken" not in versions_in(outputs)
    assert service.alive() and service.terminate() == 0
    events = [line.get("event") for line in service.log_lines()]
    assert events.count("partitions_assigned") == 1, "reloads never leave the group"


def test_topics_create_command(bootstrap_servers, topics, capsys):
    from confluent_kafka.admin import AdminClient

    from triage.cli import main

    args = ["topics", "create", "--bootstrap-servers", bootstrap_servers, "--partitions", "2"]
    for name in ("input_topic", "auto_topic", "human_topic", "dlq_topic"):
        args += ["--" + name.replace("_", "-"), topics[name]]
    assert main(args) == 0
    assert capsys.readouterr().out.count("created") == 4
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10).topics
    assert len(metadata[topics["dlq_topic"]].partitions) == 2
    assert main(args) == 0
    assert capsys.readouterr().out.count("exists") == 4


def test_a_model_promoted_by_the_gate_is_served_without_a_restart_or_a_rebalance(
    bootstrap_servers, tiny_model_dir, topics, tmp_path
):
    from tests.tiny import write_labelled_csv
    from triage.cli import main

    models, service = serving_a_copy(bootstrap_servers, tiny_model_dir, topics, tmp_path)

    candidate = shutil.copytree(tiny_model_dir / "intent", tmp_path / "retrained")
    bump_version(candidate, "intent-retrained")
    gate = ["evaluate", "intent", "--data", str(write_labelled_csv(tmp_path / "eval.csv")), "--label-column", "label"]
    assert main([*gate, "--compare", str(models / "intent"), str(candidate), "--promote", str(models / "intent")]) == 0
    wait_until(lambda: any(line.get("event") == "model_reloaded" for line in service.log_lines()), 60, "the reload")
    produce(bootstrap_servers, topics["input_topic"], inquiries(10, 10))
    assert versions_in(read_outputs(bootstrap_servers, topics, expected=20)).count("intent-retrained") == 10
    assert service.alive() and service.terminate() == 0
    events = [line.get("event") for line in service.log_lines()]
    assert events.count("starting") == 1 and events.count("partitions_assigned") == 1, "no restart, no rebalance"
