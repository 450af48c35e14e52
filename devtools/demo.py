"""`triage demo`: the whole product on embedded defaults, in one command."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Message, Producer
from rich.console import Console
from rich.table import Table

from consumer.app import prepare_topics, run_service
from consumer.logs import configure_logging
from consumer.settings import Settings
from devtools.broker import EmbeddedBroker
from model.artifacts import is_artifact
from schemas.deadletter import DeadLetterHeaders


def sample_records() -> list[bytes]:
    text = resources.files("devtools").joinpath("samples.jsonl").read_bytes()
    return [line for line in text.splitlines() if line.strip()]


def ensure_models(model_dir: Path, console: Console) -> None:
    """Train the default models into ``model_dir`` when they are missing."""
    for task in ("intent", "sentiment"):
        target = model_dir / task
        if is_artifact(target):
            continue
        console.rule(f"[bold]No {task} model in {target}: training one with the defaults")
        from training.api import train_default  # the demo trains; the service never does

        train_default(task, target)


def run_demo(model_dir: Path, timeout_s: float = 180.0, then: Callable[[Settings], None] | None = None) -> int:
    """Stream the samples through the embedded broker and `triage run`, show where each went; with ``then``, keep
    the broker and the service running (samples replayed every few seconds) while ``then(settings)`` runs."""
    console = Console(width=None if sys.stdout.isatty() else 160)  # wide enough for the table in a log
    configure_logging("console", "warning", sys.stderr)
    ensure_models(model_dir, console)
    records = sample_records()
    with EmbeddedBroker() as broker:
        console.rule(f"[bold]Embedded broker on {broker.bootstrap_servers}")
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            model_dir=model_dir,
            group_id="triage-demo",
            session_timeout_ms=6000,
            metrics_port=_free_port() if then is not None else 0,  # the console reads lag and p99 from it
            log_format="console",
            log_level="warning",
        )
        prepare_topics(settings)
        _produce(settings, records)
        console.print(
            f"Produced {len(records)} inquiries to [cyan]{settings.input_topic}[/] "
            f"({sum(1 for r in records if not r.startswith(b'{'))} of them not even JSON)"
        )
        stop = threading.Event()
        service = threading.Thread(target=run_service, args=(settings, stop), name="triage-run", daemon=True)
        service.start()
        routed = _collect(settings, len(records), timeout_s, console)
        if then is not None:
            _show(console, routed)
            replay = threading.Thread(target=_replay, args=(settings, records, stop), name="demo-replay", daemon=True)
            replay.start()
            try:
                then(settings)
            finally:
                stop.set()
                service.join(30)
            return 0
        stop.set()
        service.join(30)
    _show(console, routed)
    console.print(f"[bold]{len(routed)} of {len(records)} inquiries accounted for.[/]")
    console.print("See it in a browser: [cyan]triage demo --console[/] (serves http://127.0.0.1:8765/ until Ctrl-C)")
    return 0 if len(routed) == len(records) else 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replay(settings: Settings, records: list[bytes], stop: threading.Event, every_s: float = 3.0) -> None:
    """A few sample inquiries every ``every_s`` seconds, so the console's live view moves."""
    index = 0
    while not stop.wait(every_s):
        _produce(settings, [records[(index + i) % len(records)] for i in range(5)])
        index += 5


def _produce(settings: Settings, records: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
    for raw in records:
        key = None
        if raw.startswith(b"{"):
            key = str(orjson.loads(raw).get("customer_id", "")).encode() or None
        producer.produce(settings.input_topic, value=raw, key=key)
    producer.flush(30)


Headers = list[tuple[str, bytes]]


def _collect(
    settings: Settings, expected: int, timeout_s: float, console: Console
) -> list[tuple[str, bytes | None, Headers]]:
    viewer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "triage-demo-viewer",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    viewer.subscribe(settings.output_topics)
    routed: list[tuple[str, bytes | None, Headers]] = []
    deadline = time.monotonic() + timeout_s
    with console.status("Routing (the consumer group takes a few seconds to form)..."):
        while len(routed) < expected and time.monotonic() < deadline:
            for message in viewer.consume(100, 0.5):
                topic = message.topic()
                if message.error() is None and topic is not None:
                    routed.append((topic, message.value(), _headers(message)))
    viewer.close()
    return routed


def _headers(message: Message) -> Headers:
    """A consumed record's headers as (name, bytes) pairs, as DeadLetterHeaders reads them; one without a value
    is left out."""
    return [(name, value) for name, value in dict(message.headers() or []).items() if isinstance(value, bytes)]


def _show(console: Console, routed: list[tuple[str, bytes | None, Headers]]) -> None:
    table = Table(title="Where each inquiry went", show_lines=False)
    for column in ("event", "text", "intent (confidence)", "sentiment", "topic", "why"):
        table.add_column(column, overflow="fold")
    for topic, value, headers in sorted(routed, key=lambda r: r[1] or b""):
        if topic.endswith(".dlq"):
            letter = DeadLetterHeaders.from_kafka(headers)
            table.add_row(
                "-",
                (value or b"")[:60].decode("utf-8", "replace"),
                "-",
                "-",
                f"[red]{topic}[/]",
                f"{letter.stage}: {letter.error_class}",
            )
            continue
        assert value is not None  # the service publishes every routed event with a value
        event = orjson.loads(value)
        triage = event["triage"]
        colour = "green" if triage["route"] == "auto_response" else "yellow"
        table.add_row(
            event["event_id"],
            event["text"][:70],
            f"{triage['intent']['label']} ({triage['intent']['confidence']:.2f})",
            f"{triage['sentiment']['label']} ({triage['sentiment']['score']:.2f})",
            f"[{colour}]{topic}[/]",
            ", ".join(triage["reasons"]),
        )
    console.print(table)
