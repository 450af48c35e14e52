"""`triage bench`: how fast is the service, measured in one run, same models, same machine.

Four measurements (five with ``--members N``):

1. **seed** -- the seed's way: one ``transformers.pipeline("text-classification")`` call per inquiry per
   model (intent + sentiment), on a sample of texts;
2. **model** -- the model alone: :meth:`TriageModel.predict` on batches of the runner's batch size;
3. **end to end** -- a queued backlog of N inquiries (produced first, by an independent producer) drained
   by a ``triage run`` subprocess through the embedded broker; msgs/s from the first routed event to the
   last, by the timestamps the service's producer gives the routed records (so model loading and the group
   forming are not counted). The routed events are read back after the drain: nothing but the broker and
   the service runs while it is measured;
4. **latency** -- a steady load at about half of (3)'s rate for a while: p50/p95/p99 from production
   (the producer's clock) to the routed event's arrival at a live reader (same clock, same process);
5. **scale-out** -- as (3), with N fresh `triage run` processes in one consumer group.

Each of (3)-(5) has topics, a consumer group and services of its own, and reports the CPU (in cores) the
broker, the service(s) and the bench process used while it was measured.

Progress goes to stderr; stdout carries the table or, with ``--json``, one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from consumer.heap import freeze_long_lived, unfreeze

if TYPE_CHECKING:
    from confluent_kafka import Message, Producer

    from consumer.settings import Settings

SEED_TEXTS = 300  # inquiries the seed's per-message pipeline() classifies (it is slow)
MODEL_TEXTS = 3000  # at most this many texts for the model-only rate
LATENCY_S = 25.0  # seconds of steady load
LATENCY_FRACTION = 0.5  # steady rate = this x the end-to-end backlog rate
PARTITIONS = 4  # splits evenly between the two members of the scale-out measurement
SENT_HEADER = "bench.sent"  # production time (time.time(), ASCII) carried through the service in a header
PHASE_HEADER = "bench.phase"
ID_HEADER = "bench.id"  # the inquiry's index in its phase: duplicates (after a rebalance) are counted once
WARM_UP = 512  # inquiries routed before the steady load starts: model loaded, group formed, buffers grown
BITEXT = Path("data") / "bitext" / "customer_service_training_8k.csv"


@dataclass
class BenchOptions:
    model_dir: Path
    n: int = 6000
    json: bool = False
    seed_texts: int = SEED_TEXTS
    model_texts: int = MODEL_TEXTS
    latency_s: float = LATENCY_S
    latency_fraction: float = LATENCY_FRACTION
    timeout_s: float | None = None  # for the backlog to drain; default from n
    members: int = 1  # >= 2: also drain a fresh backlog with this many fresh `triage run` processes in one group

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        def get(name: str, default: object) -> Any:
            value = getattr(args, name, None)
            return default if value is None else value

        return cls(
            model_dir=Path(get("model_dir", Path("artifacts"))),
            n=int(get("n", 6000)),
            json=bool(get("json", False)),
            seed_texts=int(get("seed_texts", SEED_TEXTS)),
            model_texts=int(get("model_texts", MODEL_TEXTS)),
            latency_s=float(get("latency_s", LATENCY_S)),
            latency_fraction=float(get("latency_fraction", LATENCY_FRACTION)),
            timeout_s=get("timeout_s", None),
            members=int(get("members", 1)),
        )


# ---------------------------------------------------------------------------------------------- texts


def load_texts() -> tuple[list[str], str]:
    """Realistic inquiry texts: the vendored Bitext utterances, else the demo samples."""
    roots = [Path.cwd(), Path(__file__).resolve().parents[1]]
    for root in roots:
        path = root / BITEXT
        if path.is_file():
            with open(path, encoding="utf-8-sig", newline="") as handle:
                texts = [
                    row["utterance"].strip() for row in csv.DictReader(handle) if (row.get("utterance") or "").strip()
                ]
            if texts:
                return texts, str(BITEXT)
    from devtools.demo import sample_records

    texts = []
    for raw in sample_records():
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"].strip():
            texts.append(value["text"])
    return texts, "devtools/samples.jsonl"


def pick(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` texts, shuffled with a fixed seed, cycling when there are fewer than ``n``."""
    rng = random.Random(seed)
    pool = list(texts)
    out: list[str] = []
    while len(out) < n:
        rng.shuffle(pool)
        out.extend(pool[: n - len(out)])
    return out


# ---------------------------------------------------------------------------------- 1 and 2: in process


def bench_seed(model_dir: Path, texts: list[str], device: str = "cpu") -> dict[str, Any]:
    """The seed's way: one pipeline() call per inquiry per model, default settings (fp32).

    ``device`` is the service's device (``auto``, ``cpu`` or ``cuda``): on a GPU host the seed's pipelines
    run on the GPU too.
    """
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from model.classifier import choose_device

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    target = 0 if choose_device(device).device.type == "cuda" else "cpu"
    intent = pipeline("text-classification", model=str(model_dir / "intent"), device=target)
    sentiment = pipeline("text-classification", model=str(model_dir / "sentiment"), device=target)
    for text in texts[:3]:  # warm-up
        intent(text, truncation=True)
        sentiment(text, truncation=True)
    started = time.perf_counter()
    for text in texts:
        intent(text, truncation=True)
        sentiment(text, truncation=True)
    seconds = time.perf_counter() - started
    del intent, sentiment
    gc.collect()
    result: dict[str, Any] = {"texts": len(texts), "seconds": round(seconds, 3), "per_s": _rate(len(texts), seconds)}
    if target != "cpu":
        result["device"] = "cuda/float32"
    return result


def bench_model(model_dir: Path, texts: list[str], batch_size: int, settings: Settings) -> dict[str, Any]:
    """TriageModel.predict on consecutive batches of the runner's batch size."""
    from consumer.app import load_model

    model = load_model(settings.model_copy(update={"model_dir": Path(model_dir)}))
    for start in range(0, min(len(texts), 2 * batch_size), batch_size):  # warm-up
        model.predict(texts[start : start + batch_size])
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        model.predict(texts[start : start + batch_size])
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "texts": len(texts),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "per_s": _rate(len(texts), seconds),
        "device": model.runtime,
    }
    shared = getattr(model, "shared_tokenizer", None)
    if shared is not None:
        result["shared_tokenizer"] = bool(shared)
    result["torch_threads"] = _torch_threads()
    cpu = getattr(model, "cpu", None)
    if cpu is not None:
        result["parallel_models"] = cpu.parallel_models
    del model
    gc.collect()
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------- 3 and 4: end to end


@dataclass
class Arrival:
    at: float  # time.time() when the reader got it
    topic: str
    phase: bytes
    sent: float
    broker_ts: float  # the output record's timestamp (the service's producer), seconds
    value: bytes | None
    event: bytes = b""  # ID_HEADER


@dataclass
class Reader:
    """Reads the output topics from the beginning in a thread and stamps each record's arrival."""

    bootstrap: str
    topics: list[str]
    partitions: int
    arrivals: list[Arrival] = field(default_factory=list)
    seen: dict[bytes, set[bytes]] = field(default_factory=dict)  # phase -> distinct event ids, kept by the thread
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> Reader:
        self.thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self.thread.start()
        return self

    def count(self, phase: bytes) -> int:
        """Distinct events of ``phase`` read so far (a duplicate routed after a rebalance counts once)."""
        return len(self.seen.get(phase, ()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        try:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,  # the reader must not add latency of its own
                    "isolation.level": "read_uncommitted",
                    "log_level": 3,
                }
            )
            consumer.assign(
                [TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics for p in range(self.partitions)]
            )
            try:
                while not self.stop.is_set():
                    first = consumer.poll(0.05)
                    if first is None:
                        continue
                    now = time.time()
                    for message in [first, *consumer.consume(1000, 0)]:
                        if message.error() is None:
                            arrival = _arrival(message, now)
                            self.arrivals.append(arrival)
                            self.seen.setdefault(arrival.phase, set()).add(arrival.event)
            finally:
                consumer.close()
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def _arrival(message: Message, now: float) -> Arrival:
    # the bench stamps every record with bytes; a header without a value (None) counts as missing
    headers = {name: value for name, value in dict(message.headers() or []).items() if isinstance(value, bytes)}
    sent = headers.get(SENT_HEADER)
    _, ts = message.timestamp()
    return Arrival(
        at=now,
        topic=message.topic() or "",
        phase=headers.get(PHASE_HEADER, b""),
        sent=float(sent) if sent else math.nan,
        broker_ts=ts / 1000 if ts and ts > 0 else math.nan,
        value=message.value(),
        event=headers.get(ID_HEADER, b""),
    )


def _event(index: int, text: str, phase: str) -> tuple[bytes, bytes]:
    customer = f"c-{index % 997}"
    value = orjson.dumps(
        {"event_id": f"bench-{phase}-{index}", "customer_id": customer, "channel": "chat", "text": text}
    )
    return customer.encode(), value


def _produce_backlog(producer: Producer, topic: str, texts: list[str], phase: str = "backlog") -> None:
    """Queue ``texts`` on ``topic`` as fast as the producer takes them, stamped with ``phase``; wait for the acks."""
    for index, text in enumerate(texts):
        key, value = _event(index, text, phase)
        headers: list[tuple[str, str | bytes | None]] = [  # the type Producer.produce takes
            (PHASE_HEADER, phase.encode()),
            (ID_HEADER, str(index).encode()),
            (SENT_HEADER, repr(time.time()).encode()),
        ]
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} {phase} records not acknowledged by the broker")


def _produce_steady(
    producer: Producer, topic: str, texts: list[str], rate: float, seconds: float, alive: Callable[[], bool]
) -> int:
    """Produce at ``rate`` messages per second for ``seconds``, each stamped with its production time."""
    total = max(1, int(rate * seconds))
    started = time.perf_counter()
    for index in range(total):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key, value = _event(index, texts[index % len(texts)], "steady")
        headers: list[tuple[str, str | bytes | None]] = [  # the type Producer.produce takes
            (PHASE_HEADER, b"steady"),
            (ID_HEADER, str(index).encode()),
            (SENT_HEADER, repr(time.time()).encode()),
        ]
        producer.produce(topic, value=value, key=key, headers=headers)
        producer.poll(0)
        if index % 256 == 0 and not alive():
            break
    producer.flush(30)
    return index + 1


def _wait_for(
    reader: Reader,
    phase: bytes,
    expected: int,
    timeout_s: float,
    services: list[subprocess.Popen[bytes]],
    console: Console,
    what: str,
) -> None:
    """Wait until the reader has ``expected`` events of ``phase``."""

    def count() -> int:
        if reader.error is not None:
            raise RuntimeError(f"the reader failed: {reader.error!r}")
        return reader.count(phase)

    _wait_until(count, expected, timeout_s, services, console, what, every_s=0.05)


def _wait_until(
    count: Callable[[], int],
    expected: int,
    timeout_s: float,
    services: list[subprocess.Popen[bytes]],
    console: Console,
    what: str,
    every_s: float,
) -> None:
    """Poll ``count()`` until it reaches ``expected``; fail when a service exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    last_report = time.monotonic()  # the first report after 5 s
    while True:
        got = count()
        if got >= expected:
            return
        _check_alive(services, what)
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {expected} events routed within {timeout_s:.0f}s while {what}")
        if time.monotonic() - last_report > 5:
            console.log(f"{what}: {got}/{expected} routed")
            last_report = time.monotonic()
        time.sleep(every_s)


def _check_alive(services: list[subprocess.Popen[bytes]], what: str) -> None:
    for member in services:
        if member.poll() is not None:
            raise RuntimeError(f"`triage run` exited with code {member.returncode} while {what}")


def _routed(logs: list[Path]) -> int:
    """Records the services say they routed: their ``batch`` log lines, written once the outputs are acknowledged.

    A duplicate (re-routed after a rebalance) counts again here; the read-back that follows counts distinct events.
    """
    return sum(
        int(entry.get(route, 0))
        for log in logs
        for entry in _batch_entries(log)
        for route in ("auto_response", "human_agent", "dlq")
    )


def _wait_logged(
    logs: list[Path],
    services: list[subprocess.Popen[bytes]],
    expected: int,
    timeout_s: float,
    console: Console,
    what: str,
) -> None:
    """Wait until the services' logs account for ``expected`` routed events (no reader polls the broker)."""
    _wait_until(lambda: _routed(logs), expected, timeout_s, services, console, what, every_s=0.2)


def _read_back(
    bootstrap: str,
    topics: list[str],
    phase: bytes,
    expected: int,
    services: list[subprocess.Popen[bytes]],
    console: Console,
    what: str,
) -> list[Arrival]:
    """A drained phase's routed events, read from the beginning of its output topics after the drain."""
    reader = Reader(bootstrap, topics, PARTITIONS).start()
    try:
        _wait_for(reader, phase, expected, 60.0, services, console, what)
    finally:
        reader.close()
    return [a for a in reader.arrivals if a.phase == phase]


def _backlog_rate(arrivals: list[Arrival], first_batches: int) -> dict[str, Any]:
    """msgs/s from the first routed event to the last, by the routed records' own timestamps.

    The service's producer stamps each routed record as it publishes it, and the records are read back after
    the drain, so no reader competes with the service for the CPU while it is measured. Each event counts
    once (the first time it was routed). Every member's first batch is routed at or after the start of the
    interval but was worked on before it, so ``first_batches`` (the sizes of the members' first batches,
    from their logs) are not counted: rate = (events - first_batches) / (last stamp - first stamp).
    """
    if any(math.isnan(a.broker_ts) for a in arrivals):
        raise RuntimeError("routed records without a timestamp: the rate cannot be measured")
    events = _distinct(sorted(arrivals, key=lambda a: a.broker_ts))
    first_at, last_at = events[0].broker_ts, events[-1].broker_ts
    counted, seconds = len(events) - first_batches, last_at - first_at
    if counted <= 0 or seconds <= 0:
        raise RuntimeError(
            f"{len(events)} events in {first_batches} first batch(es): nothing left to time; "
            "use a backlog (--n) of several batches (BATCH_SIZE)"
        )
    return {
        "messages": len(events),
        "seconds": round(seconds, 3),
        "per_s": _rate(counted, seconds),
        "first_batch": first_batches,
        "duplicates": len(arrivals) - len(events),
        "window": (first_at, last_at),
    }


def _distinct(arrivals: list[Arrival]) -> list[Arrival]:
    """Each event once: its first arrival in the given order (a duplicate was re-routed after a rebalance)."""
    first: dict[bytes, Arrival] = {}
    for arrival in arrivals:
        first.setdefault(arrival.event, arrival)
    return list(first.values())


def _first_batches(logs: list[Path]) -> int:
    """The sizes of each service's first batch, summed (their ``batch`` log lines)."""
    total = 0
    for log in logs:
        sizes = [entry.get("size", 0) for entry in _batch_entries(log)]
        total += sizes[0] if sizes else 0
    return total


class CpuMeter:
    """CPU time of named processes, sampled from /proc in a thread, to tell how a phase shared the machine.

    ``cores(name, start, end)`` is the CPU the process used in [start, end] (``time.time()`` seconds) in cores:
    1.0 is one core busy throughout. Where /proc is not available (not Linux) it is None.
    """

    def __init__(self, every_s: float = 0.1):
        self.every_s = every_s
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _cpu_s(self, pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime, all threads

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            reading = {name: self._cpu_s(pid) for name, pid in list(self.pids.items())}
            self.samples.append((time.time(), {k: v for k, v in reading.items() if v is not None}))

    def cores(self, name: str, start: float, end: float) -> float | None:
        """From the last sample at or before ``start`` to the first at or after ``end``: the window rounded out
        to whole sampling intervals (or cut to the samples there are, at the ends of the run)."""
        readings = [(at, values[name]) for at, values in list(self.samples) if name in values]
        before = [r for r in readings if r[0] <= start] or readings[:1]
        after = [r for r in readings if r[0] >= end] or readings[-1:]
        if not before or not after or after[0][0] <= before[-1][0]:
            return None
        (t0, c0), (t1, c1) = before[-1], after[0]
        return round((c1 - c0) / (t1 - t0), 2)

    def shares(self, start: float, end: float, names: list[str]) -> dict[str, float]:
        """{name: cores} for the processes measured in the window (the ones /proc could read)."""
        out = {}
        for name in names:
            value = self.cores(name, start, end)
            if value is not None:
                out[name] = value
        return out


def _phase_names(run: str, phase: str) -> dict[str, str]:
    base = f"bench-{run}-{phase}"
    return {
        "input_topic": base,
        "auto_topic": f"{base}.auto_response",
        "human_topic": f"{base}.human_agent",
        "dlq_topic": f"{base}.dlq",
        "group_id": f"triage-{base}",
    }


def _outputs(names: dict[str, str]) -> list[str]:
    return [names["auto_topic"], names["human_topic"], names["dlq_topic"]]


@dataclass
class EndToEnd:
    """(3), (4) and (5) against one embedded broker, each phase on topics, a group and services of its own.

    Tansu's in-memory storage spends more CPU on a fetch the more the topic holds (measured on 2 cores at
    360 msgs/s: the broker's CPU grew from 0.3 to 1.0 cores over five rounds of about 6,500 messages on the
    same topics, and stayed at about 0.35 on fresh ones), so no phase pays for an earlier phase's data.
    """

    options: BenchOptions
    console: Console
    bootstrap: str
    producer: Producer
    meter: CpuMeter
    workdir: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)  # every process started, stopped on exit

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TRIAGE_SESSION_TIMEOUT_MS": "6000",
            "PYTHONUNBUFFERED": "1",
            "TRIAGE_METRICS_PORT": "0",  # any free port: several members may run side by side
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false"),
        }

    def phase(self, phase: str) -> dict[str, str]:
        from consumer.topics import ensure_topics

        names = _phase_names(self.run, phase)
        ensure_topics({"bootstrap.servers": self.bootstrap}, [names["input_topic"], *_outputs(names)], PARTITIONS, 1)
        return names

    def spawn(self, names: dict[str, str], log: Path, name: str) -> subprocess.Popen[bytes]:
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                _service_command(self.bootstrap, self.options.model_dir, names),
                env=self.env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.services.append(process)
        self.meter.watch(name, process.pid)
        return process

    def drain(self, texts: list[str], phase: str, members: int = 1) -> dict[str, Any]:
        """A backlog queued first, then drained by ``members`` fresh `triage run` processes in one group.

        msgs/s from the first routed event to the last (loading the model and forming the group are not
        counted, a rebalance is). The services' logs tell when it is done; the routed events are read back after.
        """
        names = self.phase(phase)
        self.console.log(f"{phase}: queueing a backlog of {len(texts)} inquiries on {names['input_topic']}")
        _produce_backlog(self.producer, names["input_topic"], texts, phase)
        logs = [self.workdir / f"{phase}-member{index}.log" for index in range(1, members + 1)]
        member_names = ["service"] if members == 1 else [f"member{index}" for index in range(1, members + 1)]
        self.console.log(f"{phase}: starting {members} `triage run`")
        spawned = time.time()
        processes = [self.spawn(names, log, name) for log, name in zip(logs, member_names)]
        profiler = _attach_profiler(processes[0].pid, self.console) if phase == "backlog" else None
        what = "draining the backlog" if phase == "backlog" else f"draining the {phase} backlog"
        timeout = self.options.timeout_s or max(120.0, 60.0 + len(texts) / 20)
        try:
            _wait_logged(logs, processes, len(texts), timeout, self.console, what)
            owned = [_assignment(log) for log in logs]  # before they stop (and log their partitions revoked)
            arrivals = _read_back(
                self.bootstrap,
                _outputs(names),
                phase.encode(),
                len(texts),
                processes,
                self.console,
                "reading back the routed events of " + what.removeprefix("draining "),
            )
        except BaseException:
            _show_log_tail(logs[0], self.console)
            raise
        finally:
            _stop(processes)
            if profiler is not None:  # py-spy writes its file when the service it samples has exited
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
        result = _backlog_rate(arrivals, _first_batches(logs))
        start, end = result.pop("window")
        result["startup_s"] = round(start - spawned, 2)
        result["cpu_cores"] = self.meter.shares(start, end, ["broker", *member_names, "bench"])
        if members == 1:
            result["service"] = _service_batches(logs[0])
        else:
            result.update(
                members=members,
                partitions=PARTITIONS,
                split=sorted(len(o) for o in owned),
                per_member_batches=[_service_batches(log).get("batches", 0) for log in logs],
            )
        return result

    def steady(self, texts: list[str], rate: float) -> dict[str, Any]:
        """A steady load at ``rate`` for ``latency_s`` on a running service; latency from production to arrival."""
        names = self.phase("steady")
        log = self.workdir / "steady.log"
        service = self.spawn(names, log, "steady_service")
        reader = Reader(self.bootstrap, _outputs(names), PARTITIONS).start()
        try:
            warm_up = texts[:WARM_UP]  # routed before the clock starts
            _produce_backlog(self.producer, names["input_topic"], warm_up, phase="warmup")
            _wait_for(
                reader, b"warmup", len(warm_up), 120.0, [service], self.console, "starting the steady-load service"
            )
            time.sleep(1.0)  # let the service go idle first
            self.console.log(f"steady load: {rate:.0f} msgs/s for {self.options.latency_s:.0f}s")
            steady_from = time.time()
            sent = _produce_steady(
                self.producer, names["input_topic"], texts, rate, self.options.latency_s, lambda: service.poll() is None
            )
            _wait_for(reader, b"steady", sent, 60.0, [service], self.console, "routing the steady load")
        except BaseException:
            _show_log_tail(log, self.console)
            raise
        finally:
            reader.close()
            _stop([service])
        steady = _distinct([a for a in reader.arrivals if a.phase == b"steady"])  # no duplicate without a rebalance
        return {
            "target_per_s": round(rate, 1),
            "seconds": self.options.latency_s,
            "messages": len(steady),
            **_percentiles([a.at - a.sent for a in steady]),
            "broker_ts": _percentiles([a.broker_ts - a.sent for a in steady if not math.isnan(a.broker_ts)]),
            "cpu_cores": self.meter.shares(
                steady_from, max(a.at for a in steady), ["broker", "steady_service", "bench"]
            ),
            "service": _service_batches(log, since=steady_from),
            "windows": _windows(steady, steady_from, self.meter),
        }


def bench_end_to_end(
    options: BenchOptions, texts: list[str], console: Console
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(3) the backlog, (4) the steady load and, with ``members`` >= 2, (5) the scale-out, on one embedded broker."""
    from confluent_kafka import Producer

    from devtools.broker import EmbeddedBroker

    workdir = Path(tempfile.mkdtemp(prefix="triage-bench-"))
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker(log_file=workdir / "broker.log"))
        meter = CpuMeter()
        stack.callback(meter.close)
        assert broker.process is not None  # started by enter_context
        meter.watch("broker", broker.process.pid)
        meter.watch("bench", os.getpid())  # the load generator (and, after each drain, the reader)
        # the load generator batches as a default librdkafka producer does (linger 5 ms, counted in the latency):
        # one request per inquiry would cost the broker, on the same 2 cores, more than the service it measures
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "linger.ms": 5,
                "enable.idempotence": True,
                "queue.buffering.max.messages": 200_000,
                "log_level": 3,
            }
        )
        stack.callback(_close_producer, producer)  # before the broker stops, so it does not log the disconnection
        bench = EndToEnd(options, console, broker.bootstrap_servers, producer, meter, workdir)
        stack.callback(_stop, bench.services)  # first on the way out: every service still running

        e2e = bench.drain(texts, "backlog")
        console.log(f"end to end: {e2e['per_s']:.1f} msgs/s")
        rate = max(1.0, e2e["per_s"] * options.latency_fraction)
        latency = bench.steady(pick(texts, max(1, len(texts)), 2), rate)
        console.log(f"latency: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms")
        scale = None
        if options.members > 1:
            scale = bench.drain(pick(texts, len(texts), 4), "scale", options.members)
            scale["over_one_member"] = _ratio(scale["per_s"], e2e["per_s"])
            console.log(f"scale-out: {scale['per_s']:.1f} msgs/s with {options.members} members")
    return e2e, latency, scale


def _windows(arrivals: list[Arrival], since: float, meter: CpuMeter, every_s: float = 5.0) -> list[dict[str, Any]]:
    """The steady load cut into ``every_s`` windows by production time: latency and the broker's CPU in each,
    to tell a latency that grows over the run (a broker slowing down) from one spread evenly."""
    windows: dict[int, list[float]] = {}
    for arrival in arrivals:
        windows.setdefault(int((arrival.sent - since) // every_s), []).append(arrival.at - arrival.sent)
    out: list[dict[str, Any]] = []
    for index in sorted(windows):
        start = since + index * every_s
        latency = _percentiles(windows[index])
        out.append(
            {
                "from_s": index * every_s,
                "messages": len(windows[index]),
                "p50_ms": latency["p50_ms"],
                "p99_ms": latency["p99_ms"],
                "broker_cores": meter.cores("broker", start, start + every_s),
            }
        )
    return out


def window_span(windows: list[dict[str, Any]]) -> float:
    return windows[1]["from_s"] - windows[0]["from_s"] if len(windows) > 1 else 5.0


def windows_note(windows: list[dict[str, Any]]) -> str:
    """'p99 127, 139 ms; broker 0.32, 0.37 cores' for the console and markdown tables."""
    cores = ", ".join(f"{w['broker_cores']:.2f}" if w.get("broker_cores") is not None else "?" for w in windows)
    return "p99 " + ", ".join(f"{w['p99_ms']:.0f}" for w in windows) + f" ms; broker {cores} cores"


def _close_producer(producer: Producer) -> None:
    producer.flush(10)
    if hasattr(producer, "close"):
        producer.close()


def _show_log_tail(log: Path, console: Console) -> None:
    tail = log.read_bytes()[-3000:].decode("utf-8", "replace") if log.exists() else ""
    console.log(f"service log ({log}), last lines:\n{tail}")


def _percentiles(values_s: list[float]) -> dict[str, float]:
    import numpy as np

    if not values_s:
        return {"p50_ms": math.nan, "p95_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    ms = np.asarray(values_s) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(ms.max()), 1),
        "mean_ms": round(float(ms.mean()), 1),
    }


def _log_entries(log_path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a service log (other lines, and a log not written yet, give nothing)."""
    try:
        lines = log_path.read_bytes().splitlines()
    except OSError:
        return []
    entries: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith(b"{"):
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return entries


def _batch_entries(log_path: Path) -> list[dict[str, Any]]:
    """The service's ``batch`` log lines (one per micro-batch, written once its outputs are acknowledged)."""
    return [entry for entry in _log_entries(log_path) if entry.get("event") == "batch"]


def _service_batches(log_path: Path, since: float | None = None) -> dict[str, Any]:
    """What the service logged about its batches from ``since`` on (JSON log lines)."""
    from datetime import datetime

    sizes, inference, latency = [], [], []
    for entry in _batch_entries(log_path):
        if since is not None:
            try:
                at = datetime.fromisoformat(entry["timestamp"]).timestamp()
            except (KeyError, ValueError):
                continue
            if at < since:
                continue
        sizes.append(entry.get("size", 0))
        inference.append(entry.get("inference_ms", 0.0))
        latency.append(entry.get("latency_ms", 0.0))
    if not sizes:
        return {}
    return {
        "batches": len(sizes),
        "mean_size": round(sum(sizes) / len(sizes), 1),
        "inference_s": round(sum(inference) / 1000, 3),
        "batch_s": round(sum(latency) / 1000, 3),  # inference + publishing (until acknowledged)
    }


def _service_command(bootstrap: str, model_dir: Path, names: dict[str, str]) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "triage",
        "run",
        "--bootstrap-servers",
        bootstrap,
        "--model-dir",
        str(model_dir),
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]
    for name, value in names.items():
        command += ["--" + name.replace("_", "-"), value]
    return command


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all at once (no rebalance round per member), then wait; kill what outlives 30 s."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _assignment(log_path: Path) -> set[int]:
    """The partitions a member owns now, from its partitions_assigned / _revoked / _lost log lines."""
    owned: set[int] = set()
    for entry in _log_entries(log_path):
        event = entry.get("event")
        if event == "partitions_assigned":
            owned |= set(entry.get("partitions", []))
        elif event in ("partitions_revoked", "partitions_lost"):
            owned -= set(entry.get("partitions", []))
    return owned


def _attach_profiler(pid: int, console: Console) -> subprocess.Popen[bytes] | None:
    """With TRIAGE_BENCH_PYSPY=FILE, sample the service with py-spy (collapsed stacks, all threads) into FILE.

    For finding where the service spends its time; py-spy takes some CPU itself, so numbers measured
    with it are not the ones to report.
    """
    target = os.environ.get("TRIAGE_BENCH_PYSPY")
    if not target:
        return None
    import shutil

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    console.log(f"py-spy sampling the service into {target}")
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--rate",
            "50",
            "--output",
            target,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------------------------- report


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else math.nan


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else math.nan


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return math.nan


def run_bench(args: argparse.Namespace) -> int:
    options = BenchOptions.from_args(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from consumer.logs import configure_logging
    from consumer.settings import Settings
    from model.artifacts import is_artifact

    configure_logging("console", "warning", sys.stderr)  # stdout is for the table or the JSON object
    console = Console(stderr=True)
    for task in ("intent", "sentiment"):
        if not is_artifact(options.model_dir / task):
            print(
                f"triage: error: no {task} model in {options.model_dir / task}: train one first "
                f"(`triage train {task}`)",
                file=sys.stderr,
            )
            return 1
    settings = Settings()
    texts, source = load_texts()
    load_before = _load()
    console.log(f"{len(texts)} texts from {source}; load average {load_before}")

    console.log(f"seed's way: pipeline() per inquiry, {options.seed_texts} inquiries x 2 models")
    seed = bench_seed(options.model_dir, pick(texts, options.seed_texts, 0), settings.device)
    console.log(f"seed: {seed['per_s']:.1f} inquiries/s")

    model_texts = pick(texts, min(options.n, options.model_texts), 1)
    console.log(f"model alone: TriageModel.predict on batches of {settings.batch_size}, {len(model_texts)} texts")
    model = bench_model(options.model_dir, model_texts, settings.batch_size, settings)
    console.log(f"model: {model['per_s']:.1f} texts/s ({model['device']})")

    # This process is the load generator and the reader of (4), with torch and transformers loaded for (1) and (2):
    # its full GC passes took 150-230 ms, stalling both and counting as the service's latency. Frozen, they skip them.
    freeze_long_lived()
    try:
        e2e, latency, scale_out = bench_end_to_end(options, pick(texts, options.n, 3), console)
    finally:
        unfreeze()
    load_after = _load()

    result = {
        "host": describe_host(),
        "model_dir": str(options.model_dir),
        "texts_from": source,
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "batch_size": settings.batch_size,
        "seed": seed,
        "model": model,
        "end_to_end": e2e,
        "latency": latency,
        **({"scale_out": scale_out} if scale_out else {}),
        "ratios": {
            "e2e_over_seed": _ratio(e2e["per_s"], seed["per_s"]),
            "e2e_over_model": _ratio(e2e["per_s"], model["per_s"]),
            "model_over_seed": _ratio(model["per_s"], seed["per_s"]),
        },
    }
    if options.json:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        sys.stdout.flush()
    else:
        show(Console(), result)
    return 0


def describe_host() -> dict[str, Any]:
    """What the figures were measured on: CPU model and count, GPU name where one is used."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    host: dict[str, Any] = {"cpu": cpu or platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        host["gpu"] = torch.cuda.get_device_name(0)
    return host


def show(console: Console, result: dict[str, Any]) -> None:
    seed, model, e2e, latency = result["seed"], result["model"], result["end_to_end"], result["latency"]
    table = Table(
        title=f"triage bench: {result['model_dir']} ({result['cpu_count']} CPUs, "
        f"load {result['load_before']} -> {result['load_after']})"
    )
    table.add_column("measurement")
    table.add_column("texts", justify="right")
    table.add_column("rate /s", justify="right")
    table.add_column("x seed", justify="right")
    table.add_column("notes")
    table.add_row(
        "seed: pipeline() per inquiry, 2 models",
        str(seed["texts"]),
        f"{seed['per_s']:.1f}",
        "1.0",
        f"{seed.get('device', 'fp32')}, one call per text per model",
    )
    table.add_row(
        f"model alone: predict() on batches of {model['batch_size']}",
        str(model["texts"]),
        f"{model['per_s']:.1f}",
        f"{result['ratios']['model_over_seed']:.1f}",
        f"{model['device']}, {model['torch_threads']} thread(s) per model"
        + (", intent | sentiment side by side" if model.get("parallel_models") else ""),
    )
    service = e2e.get("service") or {}
    busy = f"; {service['batches']} batches of {service['mean_size']:.0f} on average" if service else ""
    table.add_row(
        f"end to end: backlog of {e2e['messages']}, `triage run`",
        str(e2e["messages"]),
        f"{e2e['per_s']:.1f}",
        f"{result['ratios']['e2e_over_seed']:.1f}",
        f"{result['ratios']['e2e_over_model']:.2f} of model alone; startup {e2e['startup_s']}s{busy}" + cpu_note(e2e),
    )
    steady_service = latency.get("service") or {}
    table.add_row(
        f"latency: steady {latency['target_per_s']:.0f}/s for {latency['seconds']:.0f}s",
        str(latency["messages"]),
        "",
        "",
        f"p50 {latency['p50_ms']} / p95 {latency['p95_ms']} / p99 {latency['p99_ms']} ms "
        f"(max {latency['max_ms']})"
        + (f"; batches of {steady_service['mean_size']:.0f} on average" if steady_service else "")
        + cpu_note(latency),
    )
    windows = latency.get("windows") or []
    if windows:
        table.add_row(f"  by {window_span(windows):.0f}s window", "", "", "", windows_note(windows))
    scale = result.get("scale_out")
    if scale:
        table.add_row(
            f"scale-out: {scale['members']} `triage run` in one group",
            str(scale["messages"]),
            f"{scale['per_s']:.1f}",
            f"{_ratio(scale['per_s'], seed['per_s']):.1f}",
            f"{scale['over_one_member']:.2f} x one member; partitions split {scale['split']}" + cpu_note(scale),
        )
    console.print(table)


def cpu_note(measured: dict[str, Any]) -> str:
    """'; CPU: broker 0.2, service 1.7 cores' from a phase's ``cpu_cores``."""
    cores = measured.get("cpu_cores") or {}
    if not cores:
        return ""
    return "; CPU: " + ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in cores.items()) + " cores"
