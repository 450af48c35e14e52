"""Prometheus metrics and the /metrics, /healthz, /readyz HTTP endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from schemas import ModelVersions
from schemas.deadletter import HEADER_CLASS, HEADER_STAGE

if TYPE_CHECKING:
    from consumer.processor import OutputRecord
    from consumer.runner import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metrics, in a registry of their own (one per service instance)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("triage_events_consumed", "Inquiry records consumed", registry=r)
        self.routed = Counter("triage_events_routed", "Enriched events published", ["route", "intent"], registry=r)
        self.reasons = Counter(
            "triage_route_reasons",
            "Routing reasons given (an event can have several): low_intent_confidence is the abstain rate",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter("triage_dead_letters", "Records sent to the DLQ", ["stage", "reason"], registry=r)
        self.batch_size = Histogram("triage_batch_size", "Records per micro-batch", buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram(
            "triage_inference_seconds", "Decode + model + routing time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "triage_batch_seconds", "Batch time from taken to committed", buckets=LATENCY_BUCKETS, registry=r
        )
        self.end_to_end = Histogram(
            "triage_end_to_end_latency_seconds",
            "From the inquiry's Kafka timestamp to its output being acknowledged",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "triage_consumer_lag", "Records behind the end of the partition", ["topic", "partition"], registry=r
        )
        self.model = Info("triage_model", "Versions of the loaded models", registry=r)
        self.reloads = Counter("triage_model_reloads", "Model hot reloads", ["outcome"], registry=r)
        self.model_failures = Counter(
            "triage_model_failures", "Batches the model failed on or timed out on", registry=r
        )
        self.publish_failures = Counter(
            "triage_publish_failures",
            "Batches whose outputs could not be published (transient: retried; permanent: the service stopped)",
            ["kind"],
            registry=r,
        )
        self.publish_retries = Counter("triage_publish_retries", "Batches rewound to publish again", registry=r)
        self.shadow_compared = Counter(
            "triage_shadow_compared", "Inquiries the shadow model also classified", registry=r
        )
        self.shadow_disagreements = Counter(
            "triage_shadow_disagreements",
            "Inquiries where the shadow model's intent (kind=intent) or route (kind=route) is not the serving one's",
            ["kind"],
            registry=r,
        )
        self.shadow_pairs = Counter(
            "triage_shadow_intent_pairs",
            "Intent disagreements by serving and shadow intent",
            ["serving", "shadow"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "triage_shadow_failures", "Batches the shadow model failed on (nothing else changes)", registry=r
        )
        self.oldest_unfinished = Gauge(
            "triage_oldest_unfinished_seconds",
            "How long the oldest record taken but not finished has waited (0: none)",
            registry=r,
        )

    def watch(self, health: Health) -> None:
        """Gauges computed from the health state when scraped."""
        self.oldest_unfinished.set_function(health.unfinished_age)

    def set_models(self, versions: ModelVersions) -> None:
        self.model.info({"intent": versions.intent, "sentiment": versions.sentiment})

    def observe_batch(self, stats: BatchStats) -> None:
        """Runner observer: counts and timings of one committed batch."""
        now = time.time()
        self.consumed.inc(stats.size)
        self.batch_size.observe(stats.size)
        self.inference.observe(stats.inference_s)
        self.batch_latency.observe(stats.total_s)
        for record in stats.records:
            if record.route == "dlq":
                headers = dict(record.headers)
                stage = _header_text(headers, HEADER_STAGE)
                reason = _header_text(headers, HEADER_CLASS)
                self.dead_letters.labels(stage=stage, reason=reason).inc()
            else:
                self.routed.labels(route=record.route, intent=record.intent or "unknown").inc()
                for reason in record.reasons:
                    self.reasons.labels(reason=reason).inc()
                self._observe_shadow(record)
        if any(record.shadow_failed for record in stats.records):
            self.shadow_failures.inc()
        for message in stats.messages:
            kind, stamp_ms = message.timestamp()
            if kind and stamp_ms > 0:
                self.end_to_end.observe(max(0.0, now - stamp_ms / 1000))

    def _observe_shadow(self, record: OutputRecord) -> None:
        if record.shadow_intent is None:
            return
        self.shadow_compared.inc()
        if record.shadow_intent != record.intent:
            self.shadow_disagreements.labels(kind="intent").inc()
            self.shadow_pairs.labels(serving=record.intent or "unknown", shadow=record.shadow_intent).inc()
        if record.shadow_route != record.route:
            self.shadow_disagreements.labels(kind="route").inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))

    def forget_partitions(self, partitions: list[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            try:
                self.lag.remove(topic, str(partition))
            except KeyError:
                pass


def _header_text(headers: Mapping[str, bytes | None], name: str) -> str:
    value = headers.get(name, b"unknown")
    return value.decode() if value is not None else "unknown"


class Health:
    """What /healthz and /readyz report; the runner and the app update it."""

    def __init__(self, stall_timeout_s: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.model_loaded = False
        self.partitions = 0
        self.broker_reachable = False
        self.model_ok = True  # False while the model's circuit breaker is open
        self.model_problem: str | None = None
        self.publishing_ok = True  # False once the broker refused output for good
        self.unfinished_since: float | None = None  # clock time the oldest unfinished record was taken
        self.last_progress: float | None = None
        self.stall_timeout_s = stall_timeout_s
        self.clock = clock
        self._lock = threading.Lock()

    def unfinished_age(self) -> float:
        with self._lock:
            since = self.unfinished_since
        return 0.0 if since is None else max(0.0, self.clock() - since)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        age = self.unfinished_age()
        with self._lock:
            checks = {
                "model_loaded": self.model_loaded,
                "partitions_assigned": self.partitions > 0,
                "broker_reachable": self.broker_reachable,
                # records are waiting and no batch finished for stall_timeout_s: retrying in vain, or stuck
                "progressing": age < self.stall_timeout_s,
                "model_ok": self.model_ok,
                "publishing_ok": self.publishing_ok,
            }
            problem = self.model_problem
        detail: dict[str, Any] = {"checks": checks}  # the JSON body of /readyz
        if problem:
            detail["model_problem"] = problem
        if age:
            detail["oldest_unfinished_s"] = round(age, 1)
        return all(checks.values()), detail

    def update(self, **values: object) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on a port (0 picks a free one) in a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, port: int, host: str = "127.0.0.1"):
        self.metrics, self.health = metrics, health
        handler = self._handler()
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="triage-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        structlog.get_logger("triage.metrics").info(
            "metrics_listening", host=self.server.server_address[0], port=self.port
        )
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                if self.path == "/metrics":
                    self._send(200, generate_latest(server.metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b'{"status":"alive"}', "application/json")
                elif self.path == "/readyz":
                    ready, detail = server.health.readiness()
                    body = orjson.dumps({"ready": ready, **detail})
                    self._send(200 if ready else 503, body, "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:  # no access log lines
                pass

        return Handler
