"""`triage bench`: how fast is the service, measured in one run, same models, same machine.

Four measurements:

1. **seed** -- the seed's way: one ``transformers.pipeline("text-classification")`` call per inquiry per
   model (intent + sentiment), on a sample of texts;
2. **model** -- the model alone: :meth:`TriageModel.predict` on batches of the runner's batch size;
3. **end to end** -- a queued backlog of N inquiries (produced first, by an independent producer) drained
   by a ``triage run`` subprocess through the embedded broker; msgs/s from the first routed event's
   arrival at a reader to the last's (so model loading and the group forming are not counted);
4. **latency** -- a steady load at about half of (3)'s rate for a while: p50/p95/p99 from production
   (the producer's clock) to the routed event's arrival at a reader (same clock, same process).

Progress goes to stderr; stdout carries the table or, with ``--json``, one JSON object.
"""

from __future__ import annotations

import csv
import gc
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

SEED_TEXTS = 300  # inquiries the seed's per-message pipeline() classifies (it is slow)
MODEL_TEXTS = 3000  # at most this many texts for the model-only rate
LATENCY_S = 25.0  # seconds of steady load
LATENCY_FRACTION = 0.5  # steady rate = this x the end-to-end backlog rate
PARTITIONS = 4  # splits evenly between the two members of the scale-out measurement
SENT_HEADER = "bench.sent"  # production time (time.time(), ASCII) carried through the service in a header
PHASE_HEADER = "bench.phase"
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
    def from_args(cls, args: Any) -> BenchOptions:
        def get(name: str, default):
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
                texts = [row["utterance"].strip() for row in csv.DictReader(handle) if (row.get("utterance") or "").strip()]
            if texts:
                return texts, str(BITEXT)
    from consumer.demo import sample_records

    texts = []
    for raw in sample_records():
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"].strip():
            texts.append(value["text"])
    return texts, "consumer/samples.jsonl"


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

    hf_logging.disable_progress_bar()
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
    result = {"texts": len(texts), "seconds": round(seconds, 3), "per_s": _rate(len(texts), seconds)}
    if target != "cpu":
        result["device"] = "cuda/float32"
    return result


def bench_model(model_dir: Path, texts: list[str], batch_size: int, settings) -> dict[str, Any]:
    """TriageModel.predict on consecutive batches of the runner's batch size."""
    from model import TriageModel

    model = TriageModel.load(model_dir, settings.device, top_k=settings.top_k, batch_size=settings.inference_batch_size,
                             backend=settings.backend)
    for start in range(0, min(len(texts), 2 * batch_size), batch_size):  # warm-up
        model.predict(texts[start : start + batch_size])
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        model.predict(texts[start : start + batch_size])
    seconds = time.perf_counter() - started
    result = {
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


@dataclass
class Reader:
    """Reads the output topics from the beginning in a thread and stamps each record's arrival."""

    bootstrap: str
    topics: list[str]
    partitions: int
    arrivals: list[Arrival] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> Reader:
        self.thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self.thread.start()
        return self

    def count(self, phase: bytes) -> int:
        return sum(1 for a in list(self.arrivals) if a.phase == phase)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        try:
            consumer = Consumer({
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # the reader must not add latency of its own
                "isolation.level": "read_uncommitted",
                "log_level": 3,
            })
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics for p in range(self.partitions)])
            try:
                while not self.stop.is_set():
                    first = consumer.poll(0.05)
                    if first is None:
                        continue
                    now = time.time()
                    for message in [first, *consumer.consume(1000, 0)]:
                        if message.error() is None:
                            self.arrivals.append(_arrival(message, now))
            finally:
                consumer.close()
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def _arrival(message, now: float) -> Arrival:
    headers = dict(message.headers() or [])
    sent = headers.get(SENT_HEADER)
    _, ts = message.timestamp()
    return Arrival(
        at=now,
        topic=message.topic(),
        phase=headers.get(PHASE_HEADER, b""),
        sent=float(sent) if sent else math.nan,
        broker_ts=ts / 1000 if ts and ts > 0 else math.nan,
        value=message.value(),
    )


def _event(index: int, text: str, phase: str) -> tuple[bytes, bytes]:
    customer = f"c-{index % 997}"
    value = orjson.dumps({"event_id": f"bench-{phase}-{index}", "customer_id": customer, "channel": "chat", "text": text})
    return customer.encode(), value


def _produce_backlog(producer, topic: str, texts: list[str], phase: str = "backlog") -> None:
    """Queue ``texts`` on ``topic`` as fast as the producer takes them, stamped with ``phase``; wait for the acks."""
    for index, text in enumerate(texts):
        key, value = _event(index, text, phase)
        headers = [(PHASE_HEADER, phase.encode()), (SENT_HEADER, repr(time.time()).encode())]
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


def _produce_steady(producer, topic: str, texts: list[str], rate: float, seconds: float, alive) -> int:
    """Produce at ``rate`` messages per second for ``seconds``, each stamped with its production time."""
    total = max(1, int(rate * seconds))
    started = time.perf_counter()
    for index in range(total):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key, value = _event(index, texts[index % len(texts)], "steady")
        headers = [(PHASE_HEADER, b"steady"), (SENT_HEADER, repr(time.time()).encode())]
        producer.produce(topic, value=value, key=key, headers=headers)
        producer.poll(0)
        if index % 256 == 0 and not alive():
            break
    producer.flush(30)
    return index + 1


def _wait_for(reader: Reader, phase: bytes, expected: int, timeout_s: float,
              service: subprocess.Popen | list[subprocess.Popen], console: Console, what: str) -> None:
    services = service if isinstance(service, list) else [service]
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while True:
        got = reader.count(phase)
        if got >= expected:
            return
        if reader.error is not None:
            raise RuntimeError(f"the reader failed: {reader.error!r}")
        for member in services:
            if member.poll() is not None:
                raise RuntimeError(f"`triage run` exited with code {member.returncode} while {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {expected} events routed within {timeout_s:.0f}s while {what}")
        if time.monotonic() - last_report > 5:
            console.log(f"{what}: {got}/{expected} routed")
            last_report = time.monotonic()
        time.sleep(0.05)


def _backlog_rate(arrivals: list[Arrival]) -> dict[str, Any]:
    """msgs/s from the first routed event's arrival to the last's.

    The events of the first batch arrive together at the start of the interval, so they are not counted:
    rate = (events after the first batch) / (last arrival - first arrival). The first batch is the set of
    events sharing the first event's ``triage.processed_at``.
    """
    arrivals = sorted(arrivals, key=lambda a: a.at)
    first_at, last_at = arrivals[0].at, arrivals[-1].at
    first_batch = 1
    stamp = _processed_at(arrivals[0].value)
    if stamp is not None:
        first_batch = max(1, sum(1 for a in arrivals if _processed_at(a.value) == stamp))
    seconds = last_at - first_at
    counted = len(arrivals) - first_batch
    broker = sorted(a.broker_ts for a in arrivals if not math.isnan(a.broker_ts))
    result = {
        "messages": len(arrivals),
        "seconds": round(seconds, 3),
        "per_s": _rate(counted, seconds),
        "first_batch": first_batch,
    }
    if len(broker) == len(arrivals) and broker[-1] > broker[0]:
        result["per_s_broker_ts"] = _rate(counted, broker[-1] - broker[0])
    return result


def _processed_at(value: bytes | None) -> str | None:
    try:
        return orjson.loads(value)["triage"]["processed_at"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _percentiles(values_s: list[float]) -> dict[str, float]:
    import numpy as np

    if not values_s:
        return {"p50_ms": math.nan, "p95_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    ms = np.asarray(values_s) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
            "max_ms": round(float(ms.max()), 1), "mean_ms": round(float(ms.mean()), 1)}


def _log_entries(log_path: Path) -> list[dict]:
    """The JSON lines of a service log (other lines, and a log not written yet, give nothing)."""
    try:
        lines = log_path.read_bytes().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        if line.startswith(b"{"):
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return entries


def _service_batches(log_path: Path, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """What the service logged about its batches in [since, until) (JSON log lines)."""
    from datetime import datetime

    sizes, inference, latency = [], [], []
    for entry in _log_entries(log_path):
        if entry.get("event") != "batch":
            continue
        if since is not None or until is not None:
            try:
                at = datetime.fromisoformat(entry["timestamp"]).timestamp()
            except (KeyError, ValueError):
                continue
            if (since is not None and at < since) or (until is not None and at >= until):
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


def bench_end_to_end(options: BenchOptions, texts: list[str], console: Console) -> tuple[dict, dict]:
    from confluent_kafka import Producer

    from consumer.broker import EmbeddedBroker
    from consumer.topics import ensure_topics

    run = uuid.uuid4().hex[:8]
    names = {
        "input_topic": f"bench-{run}",
        "auto_topic": f"bench-{run}.auto_response",
        "human_topic": f"bench-{run}.human_agent",
        "dlq_topic": f"bench-{run}.dlq",
        "group_id": f"triage-bench-{run}",
    }
    outputs = [names["auto_topic"], names["human_topic"], names["dlq_topic"]]
    workdir = Path(tempfile.mkdtemp(prefix="triage-bench-"))
    service_log = workdir / "service.log"
    with EmbeddedBroker(log_file=workdir / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics({"bootstrap.servers": bootstrap}, [names["input_topic"], *outputs], PARTITIONS, 1)
        # the load generator batches as a default librdkafka producer does (linger 5 ms, counted in the latency):
        # one request per inquiry would cost the broker, on the same 2 cores, more than the service it measures
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                             "queue.buffering.max.messages": 200_000, "log_level": 3})
        console.log(f"producing a backlog of {len(texts)} inquiries to {names['input_topic']}")
        _produce_backlog(producer, names["input_topic"], texts)
        reader = Reader(bootstrap, outputs, PARTITIONS).start()

        env = {**os.environ, "TRIAGE_SESSION_TIMEOUT_MS": "6000", "PYTHONUNBUFFERED": "1",
               "TRIAGE_METRICS_PORT": "0",  # any free port: several members may run side by side
               "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
        command = _service_command(bootstrap, options.model_dir, names)
        members: list[subprocess.Popen] = []  # (5)'s processes, stopped with the first one
        console.log("starting `triage run`")
        spawned = time.time()
        with open(service_log, "wb") as log_handle:
            service = subprocess.Popen(command, env=env, stdout=log_handle, stderr=subprocess.STDOUT)
        profiler = _attach_profiler(service.pid, console)
        try:
            timeout = options.timeout_s or max(120.0, 60.0 + len(texts) / 20)
            _wait_for(reader, b"backlog", len(texts), timeout, service, console, "draining the backlog")
            backlog = [a for a in reader.arrivals if a.phase == b"backlog"]
            e2e = _backlog_rate(backlog)
            e2e["startup_s"] = round(min(a.at for a in backlog) - spawned, 2)
            drained_at = max(a.at for a in backlog)
            e2e["service"] = _service_batches(service_log, until=drained_at + 0.5)
            console.log(f"end to end: {e2e['per_s']:.1f} msgs/s")

            rate = max(1.0, e2e["per_s"] * options.latency_fraction)
            time.sleep(1.0)  # let the service go idle first
            console.log(f"steady load: {rate:.0f} msgs/s for {options.latency_s:.0f}s")
            steady_from = time.time()
            sent = _produce_steady(producer, names["input_topic"], pick(texts, max(1, len(texts)), 2), rate,
                                   options.latency_s, lambda: service.poll() is None)
            _wait_for(reader, b"steady", sent, 60.0, service, console, "routing the steady load")
            steady = [a for a in reader.arrivals if a.phase == b"steady"]
            latency = {
                "target_per_s": round(rate, 1),
                "seconds": options.latency_s,
                "messages": len(steady),
                **_percentiles([a.at - a.sent for a in steady]),
                "broker_ts": _percentiles([a.broker_ts - a.sent for a in steady if not math.isnan(a.broker_ts)]),
                "service": _service_batches(service_log, since=steady_from),
            }
            console.log(f"latency: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms")
            if options.members > 1:
                _stop([service])  # (5) measures fresh members on a fresh backlog, as (3) measured one
                scale = _scale_out(options, texts, producer, reader, bootstrap, names, env, workdir, members,
                                   console)
                scale["over_one_member"] = _ratio(scale["per_s"], e2e["per_s"])
                latency["scale_out"] = scale  # carried out to run_bench
        except BaseException:
            tail = service_log.read_bytes()[-3000:].decode("utf-8", "replace") if service_log.exists() else ""
            console.log(f"service log ({service_log}), last lines:\n{tail}")
            raise
        finally:
            reader.close()
            _stop([service, *members])
            if profiler is not None:
                profiler.wait(30)
            producer.flush(10)
            if hasattr(producer, "close"):  # before the broker stops, so it does not log the disconnection
                producer.close()
    return e2e, latency


def _service_command(bootstrap: str, model_dir: Path, names: dict[str, str]) -> list[str]:
    command = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", bootstrap,
               "--model-dir", str(model_dir), "--log-format", "json", "--log-level", "info"]
    for name, value in names.items():
        command += ["--" + name.replace("_", "-"), value]
    return command


def _stop(processes: list[subprocess.Popen]) -> None:
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


def _scale_out(options: BenchOptions, texts: list[str], producer, reader: Reader, bootstrap: str,
               names: dict[str, str], env: dict, workdir: Path, members: list[subprocess.Popen],
               console: Console) -> dict[str, Any]:
    """(5) A fresh backlog drained by ``options.members`` fresh `triage run` processes in one new group.

    Measured as (3) is: the backlog is queued on a new topic first, then the members start together;
    msgs/s from the first routed event to the last (the group forming is not counted, a rebalance is).
    """
    from consumer.topics import ensure_topics

    scale = {**names, "input_topic": names["input_topic"] + "-scale", "group_id": names["group_id"] + "-scale"}
    ensure_topics({"bootstrap.servers": bootstrap}, [scale["input_topic"]], PARTITIONS, 1)
    batch = pick(texts, len(texts), 4)
    console.log(f"scale-out: a backlog of {len(batch)} for {options.members} members in one group")
    _produce_backlog(producer, scale["input_topic"], batch, phase="scale")
    logs = []
    for index in range(1, options.members + 1):
        logs.append(workdir / f"scale-member{index}.log")
        with open(logs[-1], "wb") as handle:
            members.append(subprocess.Popen(_service_command(bootstrap, options.model_dir, scale), env=env,
                                            stdout=handle, stderr=subprocess.STDOUT))
    _wait_for(reader, b"scale", len(batch), max(120.0, 60.0 + len(batch) / 20), members, console,
              "draining the scale-out backlog")
    result = _backlog_rate([a for a in reader.arrivals if a.phase == b"scale"])
    owned = [_assignment(log) for log in logs]
    result.update(members=options.members, partitions=PARTITIONS, split=sorted(len(o) for o in owned),
                  per_member_batches=[_service_batches(log).get("batches", 0) for log in logs])
    console.log(f"scale-out: {result['per_s']:.1f} msgs/s with {options.members} members")
    return result


def _attach_profiler(pid: int, console: Console) -> subprocess.Popen | None:
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
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--threads", "--nonblocking",
                             "--rate", "50", "--output", target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def run_bench(args: Any) -> int:
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
            print(f"triage: error: no {task} model in {options.model_dir / task}: train one first "
                  f"(`triage train {task}`)", file=sys.stderr)
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

    e2e, latency = bench_end_to_end(options, pick(texts, options.n, 3), console)
    scale_out = latency.pop("scale_out", None)
    load_after = _load()

    result = {
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


def show(console: Console, result: dict[str, Any]) -> None:
    seed, model, e2e, latency = result["seed"], result["model"], result["end_to_end"], result["latency"]
    table = Table(title=f"triage bench: {result['model_dir']} ({result['cpu_count']} CPUs, "
                        f"load {result['load_before']} -> {result['load_after']})")
    table.add_column("measurement")
    table.add_column("texts", justify="right")
    table.add_column("rate /s", justify="right")
    table.add_column("x seed", justify="right")
    table.add_column("notes")
    table.add_row("seed: pipeline() per inquiry, 2 models", str(seed["texts"]), f"{seed['per_s']:.1f}", "1.0",
                  f"{seed.get('device', 'fp32')}, one call per text per model")
    table.add_row(f"model alone: predict() on batches of {model['batch_size']}", str(model["texts"]),
                  f"{model['per_s']:.1f}", f"{result['ratios']['model_over_seed']:.1f}",
                  f"{model['device']}, {model['torch_threads']} thread(s) per model"
                  + (", intent | sentiment side by side" if model.get("parallel_models") else ""))
    service = e2e.get("service") or {}
    busy = f"; {service['batches']} batches of {service['mean_size']:.0f} on average" if service else ""
    table.add_row(f"end to end: backlog of {e2e['messages']}, `triage run`", str(e2e["messages"]),
                  f"{e2e['per_s']:.1f}", f"{result['ratios']['e2e_over_seed']:.1f}",
                  f"{result['ratios']['e2e_over_model']:.2f} of model alone; startup {e2e['startup_s']}s{busy}")
    steady_service = latency.get("service") or {}
    table.add_row(f"latency: steady {latency['target_per_s']:.0f}/s for {latency['seconds']:.0f}s",
                  str(latency["messages"]), "", "",
                  f"p50 {latency['p50_ms']} / p95 {latency['p95_ms']} / p99 {latency['p99_ms']} ms "
                  f"(max {latency['max_ms']})" + (f"; batches of {steady_service['mean_size']:.0f} on average"
                                                   if steady_service else ""))
    scale = result.get("scale_out")
    if scale:
        table.add_row(f"scale-out: {scale['members']} `triage run` in one group", str(scale["messages"]),
                      f"{scale['per_s']:.1f}", f"{_ratio(scale['per_s'], seed['per_s']):.1f}",
                      f"{scale['over_one_member']:.2f} x one member; partitions split {scale['split']}")
    console.print(table)
