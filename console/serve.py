"""`triage console`: load the model, start the live feed and serve the page."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from console.live import LiveFeed, LiveState, service_metrics
from console.web import create_app
from consumer.routing import RoutingPolicy
from consumer.settings import Settings
from schemas.feedback import Feedback


def feedback_publisher(config: dict[str, Any], topic: str) -> Any:
    """A function publishing one correction to ``topic`` (keyed by event id), waiting for the broker's ack."""
    from confluent_kafka import Producer

    producer = Producer({**config, "enable.idempotence": True})

    def publish(correction: Feedback) -> None:
        producer.produce(topic, key=correction.event_id.encode(), value=correction.model_dump_json().encode())
        if producer.flush(10) > 0:
            raise RuntimeError(f"the correction was not acknowledged by the broker on {topic}")

    return publish


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8765,
    metrics_url: str | None = None,
    live: bool = True,
    show_text: bool = False,
    feedback: bool = True,
) -> int:
    import uvicorn

    from consumer.app import load_model

    log = structlog.get_logger("triage.console")
    policy = RoutingPolicy.from_file(settings.policy_file)
    model = load_model(settings)
    policy.check_fits(model)
    state = LiveState(show_text=show_text) if live else None
    config = settings.common_config()
    topics = {"auto_response": settings.auto_topic, "human_agent": settings.human_topic, "dlq": settings.dlq_topic}
    with contextlib.ExitStack() as stack:
        if state is not None:
            stack.callback(LiveFeed(config, topics, state).start().stop)
        app = create_app(
            model,
            policy,
            settings.max_text_chars,
            live=state,
            metrics=lambda: service_metrics(metrics_url),
            publish_feedback=feedback_publisher(config, settings.feedback_topic) if feedback else None,
        )
        print(f"console: http://{host}:{port}/", flush=True)
        log.info("console_started", url=f"http://{host}:{port}/", live=live, text_shown=show_text)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
