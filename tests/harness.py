"""Drives `triage run` processes and reconciles what came out with what went in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.kafka_client import Record, consume

TEXTS = [
    "i want a refund thanks",
    "my password is awful",
    "can you help me talk to an agent",
    "track my order please",
    "i have a complaint, this is terrible",
    "help me with my password please",
    "great, refund the order",
]


class Service:
    """One `triage run` process with its own log file. ``Service.running`` tracks them for clean-up."""

    running: list[Service] = []

    def __init__(self, bootstrap: str, model_dir: Path, topics: dict[str, str], log_path: Path, **settings: str):
        env = {
            **os.environ,
            "TRIAGE_SESSION_TIMEOUT_MS": "6000",
            "TRIAGE_LOG_FORMAT": "json",
            "TRIAGE_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        env.update({f"TRIAGE_{k.upper()}": str(v) for k, v in settings.items()})
        command = [
            sys.executable,
            "-m",
            "triage",
            "run",
            "--bootstrap-servers",
            bootstrap,
            "--model-dir",
            str(model_dir),
        ]
        for name, value in topics.items():
            command += ["--" + name.replace("_", "-"), value]
        self.log_path = log_path
        self.process = subprocess.Popen(command, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
        Service.running.append(self)

    @classmethod
    def kill_all(cls) -> None:
        """Stop what a failed test left running, so no process outlives its test."""
        for service in cls.running:
            if service.alive():
                service.kill9()
        cls.running.clear()

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout_s: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                try:
                    lines.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    pass
        return lines

    def routed_count(self) -> int:
        return sum(line.get("size", 0) for line in self.log_lines() if line.get("event") == "batch")


def wait_for_topics(
    bootstrap: str,
    names: list[str],
    timeout_s: float = 60,
    service: Service | None = None,
    client_config: dict | None = None,
) -> None:
    """The service creates its topics at start; wait so the test's producer does not auto-create them.
    ``client_config`` replaces the plain-text connection (TLS, SASL)."""
    admin = AdminClient(client_config or {"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while not set(names) <= set(admin.list_topics(timeout=10).topics):
        assert service is None or service.alive(), "service exited early"
        assert time.monotonic() < deadline, "topics were not created"
        time.sleep(0.2)


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)


def inquiries(start: int, count: int, keys: int = 12) -> list[tuple[bytes, bytes, list]]:
    return [
        (
            f"customer-{i % keys}".encode(),
            orjson.dumps({"event_id": f"ev-{i}", "text": TEXTS[i % len(TEXTS)], "seq": i}),
            [],
        )
        for i in range(start, start + count)
    ]


@dataclass
class Reconciliation:
    """The oracle: every input event_id in auto ∪ human ∪ DLQ, duplicates counted, order per key checked."""

    expected: set[str]
    seen: Counter = field(default_factory=Counter)
    order_violations: list[str] = field(default_factory=list)

    @property
    def lost(self) -> set[str]:
        return self.expected - set(self.seen)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values() if count > 1)

    @classmethod
    def of(cls, expected: set[str], records: list[Record]) -> Reconciliation:
        result = cls(expected)
        per_key: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        for record in records:
            if record.value is None:
                continue
            try:
                payload = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict) and "event_id" in payload:
                result.seen[payload["event_id"]] += 1
                if "seq" in payload:
                    per_key[(record.topic, record.partition, record.key)].append((record.offset, payload["seq"]))
        for key, values in per_key.items():
            seqs = [seq for _, seq in sorted(values)]
            # with duplicates a key's sequence may restart; it must never go backwards otherwise
            first_seen: dict[int, int] = {}
            for position, seq in enumerate(seqs):
                first_seen.setdefault(seq, position)
            firsts = sorted(first_seen.items(), key=lambda item: item[1])
            if [s for s, _ in firsts] != sorted(first_seen):
                result.order_violations.append(str(key))
        return result


def read_outputs(
    bootstrap: str, topics: dict[str, str], expected: int, timeout_s: float = 180, settle_s: float = 3.0
) -> list[Record]:
    names = [topics["auto_topic"], topics["human_topic"], topics["dlq_topic"]]
    return consume(bootstrap, names, expected=expected, timeout_s=timeout_s, settle_s=settle_s)


def reconcile_until_complete(
    bootstrap: str, topics: dict[str, str], expected: set[str], timeout_s: float = 180
) -> Reconciliation:
    """Read the outputs until nothing expected is missing (or time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = Reconciliation.of(expected, read_outputs(bootstrap, topics, len(expected), timeout_s=30, settle_s=1))
        if not result.lost or time.monotonic() > deadline:
            return result
        time.sleep(1)


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metrics_port(service: Service) -> int:
    wait_until(
        lambda: any(line.get("event") == "metrics_listening" for line in service.log_lines()), 60, "metrics port"
    )
    return next(line["port"] for line in service.log_lines() if line.get("event") == "metrics_listening")


def samples(port: int) -> dict[tuple, float]:
    _, body = get(port, "/metrics")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))
