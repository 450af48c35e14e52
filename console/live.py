"""What the console shows of the running service: the last routed events, counts, and the service's metrics."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from schemas import EnrichedEvent

#: seconds of routed events the rate is computed over
RATE_WINDOW_S = 10.0


@dataclass
class LiveState:
    """Counts since the console started and the last ``keep`` routed events (text only when allowed)."""

    keep: int = 50
    show_text: bool = False
    routes: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    events: deque[dict[str, Any]] = field(default_factory=deque)
    arrivals: deque[float] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic_route: str, value: bytes | None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.arrivals.append(now)
            self.routes[topic_route] += 1
            if topic_route == "dlq":
                return
            try:
                event = EnrichedEvent.model_validate_json(value or b"")
            except ValidationError:
                return
            triage = event.triage
            self.intents[triage.intent.label] += 1
            self.events.appendleft(
                {
                    "event_id": event.event_id,
                    "route": triage.route,
                    "intent": triage.intent.label,
                    "confidence": triage.intent.confidence,
                    "sentiment": triage.sentiment.label,
                    "reasons": triage.reasons,
                    "model": triage.model.intent,
                    "text": event.text if self.show_text else None,
                }
            )
            while len(self.events) > self.keep:
                self.events.pop()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        with self.lock:
            while self.arrivals and self.arrivals[0] < now - RATE_WINDOW_S:
                self.arrivals.popleft()
            return {
                "routes": dict(self.routes),
                "intents": dict(self.intents.most_common()),
                "events": list(self.events),
                "per_s": round(len(self.arrivals) / RATE_WINDOW_S, 1),
                "text_shown": self.show_text,
            }


class LiveFeed:
    """A thread reading the routing and DLQ topics from their end, with no consumer group: the service's group,
    offsets and speed are untouched. ``stop()`` ends it."""

    def __init__(self, config: dict[str, Any], topics: dict[str, str], state: LiveState):
        self.config, self.topics, self.state = config, topics, state
        self.log = structlog.get_logger("triage.console")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-live", daemon=True)

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        consumer = Consumer(
            {
                **self.config,
                "group.id": f"triage-console-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        route_of = {topic: route for route, topic in self.topics.items()}
        try:
            assigned = False
            while not self._stop.is_set():
                if not assigned:
                    metadata = consumer.list_topics(timeout=5)
                    found = [t for t in route_of if t in metadata.topics]
                    if len(found) < len(route_of):
                        self._stop.wait(1.0)
                        continue
                    consumer.assign(
                        [TopicPartition(t, p, OFFSET_END) for t in found for p in metadata.topics[t].partitions]
                    )
                    assigned = True
                for message in consumer.consume(200, 0.5):
                    topic = message.topic()
                    if message.error() is None and topic in route_of:
                        self.state.add(route_of[topic], message.value())
        except Exception as exc:  # the page shows what it has; a broken feed never takes the console down
            self.log.error("console_live_feed_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            consumer.close()


def service_metrics(url: str | None, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """Lag, p99 end-to-end latency, DLQ count and model version from the service's /metrics; None if unreachable."""
    if not url:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (an operator-given URL)
            text = response.read().decode("utf-8")
    except (OSError, ValueError):
        return None
    lag = 0.0
    dead = 0.0
    model: dict[str, str] = {}
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "triage_consumer_lag":
                lag += sample.value
            elif sample.name == "triage_dead_letters_total":
                dead += sample.value
            elif sample.name == "triage_model_info":
                model = {k: v for k, v in sample.labels.items() if k in ("intent", "sentiment")}
            elif sample.name == "triage_end_to_end_latency_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    return {"lag": int(lag), "dlq": int(dead), "model": model, "p99_ms": _quantile_ms(sorted(buckets), 0.99)}


def _quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the histogram bucket holding the q-quantile (Prometheus' histogram_quantile, coarser)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return None if bound == float("inf") else round(bound * 1000, 1)
    return None
