"""The service against a broker behind TLS, and against one that refuses its login
(tests/brokers.py: tls_embedded_broker)."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from tests.brokers import self_signed_certificate, tls_embedded_broker
from tests.harness import Service, inquiries, wait_for_topics, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER, PASSWORD = "triage-svc", "s3cret-Passw0rd-not-for-logs"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    with tls_embedded_broker(tmp_path_factory.mktemp("tls")) as (bootstrap, ca):
        yield bootstrap, ca


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    with tls_embedded_broker(tmp_path_factory.mktemp("sasl"), authentication=True) as (bootstrap, ca):
        yield bootstrap, ca


def test_the_service_routes_over_tls_with_the_certificate_checked(tls_broker, tiny_model_dir, topics, tmp_path):
    bootstrap, ca = tls_broker
    service = Service(
        bootstrap,
        tiny_model_dir,
        topics,
        tmp_path / "service.log",
        security_protocol="SSL",
        ssl_ca_location=ca,
        topic_partitions=1,
    )
    config = {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca}
    wait_for_topics(bootstrap, list(topics.values())[:4], service=service, client_config=config)
    producer = Producer(config)
    for key, value, _ in inquiries(0, 30):
        producer.produce(topics["input_topic"], value, key=key)
    assert producer.flush(60) == 0
    wait_until(lambda: service.routed_count() >= 30, 120, "30 inquiries routed over TLS")
    seen = read_event_ids(config, [topics["auto_topic"], topics["human_topic"], topics["dlq_topic"]], 30)
    assert service.terminate() == 0
    assert seen == {f"ev-{i}" for i in range(30)}


def test_a_certificate_the_ca_did_not_sign_stops_the_service_with_a_clear_error(
    tls_broker, tiny_model_dir, topics, tmp_path
):
    bootstrap, _ = tls_broker
    other_ca, _ = self_signed_certificate(tmp_path)  # trusts a CA that never signed the broker's certificate
    code, took, log = run_until_exit(
        Service(
            bootstrap,
            tiny_model_dir,
            topics,
            tmp_path / "service.log",
            security_protocol="SSL",
            ssl_ca_location=other_ca,
        )
    )
    assert code == 1
    assert "refused the connection" in log and "certificate verify failed" in log, log[-2000:]
    assert took < 30, f"took {took:.0f}s to give up"


@pytest.mark.parametrize("create_topics", [True, False])
def test_a_refused_login_stops_the_service_at_once_with_a_clear_error(
    sasl_broker, tiny_model_dir, topics, tmp_path, create_topics
):
    bootstrap, ca = sasl_broker
    service = Service(
        bootstrap,
        tiny_model_dir,
        topics,
        tmp_path / "service.log",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password=PASSWORD,
        ssl_ca_location=ca,
        create_topics=create_topics,
    )
    code, took, log = run_until_exit(service)
    assert code == 1
    assert "refused the connection" in log and "authentication failed" in log.lower(), log[-2000:]
    assert took < 30, f"took {took:.0f}s to give up"
    errors = [line for line in service.log_lines() if line.get("level") in ("error", "warning")]
    assert len(errors) <= 10, f"{len(errors)} error lines: a retry storm"
    assert PASSWORD not in log, "the password never reaches the log"


def test_print_config_masks_every_secret():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "triage",
            "run",
            "--print-config",
            "--security-protocol",
            "SASL_SSL",
            "--sasl-username",
            USER,
        ],
        env={
            "TRIAGE_SASL_PASSWORD": PASSWORD,
            "PATH": "/usr/bin:/bin",
            "TRIAGE_KAFKA_PROPERTIES": '{"sasl.oauthbearer.config": "clientSecret=abc123"}',
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = orjson.loads(result.stdout)
    assert config["sasl_username"] == USER and config["security_protocol"] == "SASL_SSL"
    assert PASSWORD not in result.stdout and "abc123" not in result.stdout


def run_until_exit(service: Service) -> tuple[int, float, str]:
    started = time.monotonic()
    code = service.process.wait(90)
    return code, time.monotonic() - started, service.log_path.read_text()


def read_event_ids(config: dict, topics: list[str], expected: int, timeout_s: float = 60) -> set[str]:
    reader = Consumer(
        {**config, "group.id": "tls-reader", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    reader.subscribe(topics)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is not None and not message.error():
                seen.add(orjson.loads(message.value())["event_id"])
    finally:
        reader.close()
    return seen
