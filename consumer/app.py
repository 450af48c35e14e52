"""Wiring: settings -> logging, model, policy, topics -> runner. No logic of its own."""

from __future__ import annotations

import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import structlog

from consumer.heap import freeze_long_lived, refreeze, unfreeze
from consumer.metrics import Health, Metrics, MetricsServer
from consumer.processor import Processor, Topics
from consumer.reload import ModelReloader
from consumer.routing import RoutingPolicy
from consumer.runner import Runner
from consumer.settings import Settings
from consumer.topics import ensure_topics
from model import TriageModel


def load_model(settings: Settings, model_dir: Path | None = None) -> TriageModel:
    return TriageModel.load(
        model_dir or settings.model_dir,
        settings.device,
        top_k=settings.top_k,
        batch_size=settings.inference_batch_size,
        backend=settings.backend,
        bf16=settings.cpu_bf16,
        torch_threads=settings.torch_threads,
        parallel_models=settings.parallel_models,
    )


def build_processor(settings: Settings, model: TriageModel | None = None) -> Processor:
    policy = RoutingPolicy.from_file(settings.policy_file)  # a bad policy file stops the start before the model loads
    model = model or load_model(settings)
    policy.check_fits(model)
    return Processor(
        model=model,
        shadow=load_model(settings, settings.shadow_model_dir) if settings.shadow_model_dir else None,
        policy=policy,
        topics=Topics(settings.auto_topic, settings.human_topic, settings.dlq_topic),
        max_text_chars=settings.max_text_chars,
    )


def prepare_topics(settings: Settings) -> None:
    if settings.create_topics:
        ensure_topics(
            settings.admin_config(),
            [settings.input_topic, *settings.output_topics],
            settings.topic_partitions,
            settings.topic_replication,
        )


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set the stop flag: the runner finishes its batch, flushes, commits and closes."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # nothing else: logging here could block on a lock the interrupted code holds

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_service(settings: Settings, stop: threading.Event | None = None, model: TriageModel | None = None) -> int:
    log = structlog.get_logger("triage")
    log.info("starting", settings=settings.redacted())
    metrics, health = Metrics(), Health(stall_timeout_s=settings.stall_timeout_s)
    metrics.watch(health)
    with ExitStack() as stack:
        if settings.metrics_port >= 0:
            server = MetricsServer(metrics, health, settings.metrics_port, host=settings.metrics_host)
            stack.callback(server.start().stop)
        processor = build_processor(settings, model)
        metrics.set_models(processor.model.versions)
        health.update(model_loaded=True)
        log.info(
            "model_loaded",
            versions=processor.model.versions.model_dump(),
            shadow=processor.shadow.versions.model_dump() if processor.shadow else None,
            runtime=processor.model.runtime,
            onnx_unused=processor.model.backend_notes or None,
        )
        prepare_topics(settings)
        log.info("heap_frozen", objects=freeze_long_lived())  # no full GC pass walks the models (consumer/heap.py)
        stack.callback(unfreeze)  # on the way out: a process that runs the service in-process gets its collector back

        def swapped(new: TriageModel) -> None:
            metrics.set_models(new.versions)
            metrics.reloads.labels(outcome="swapped").inc()
            refreeze()

        reloader = ModelReloader(
            settings,
            processor,
            load=lambda: load_model(settings),
            on_swap=swapped,
            on_refuse=lambda: metrics.reloads.labels(outcome="refused").inc(),
        )
        stack.callback(reloader.close)
        stop = stop or threading.Event()
        install_signal_handlers(stop)
        Runner(settings, processor, stop, metrics=metrics, health=health, ticks=[reloader.tick]).run()
    log.info("stopped")
    return 0
