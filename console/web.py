"""The console's HTTP side: the page, and a small JSON API it calls (classify, live, labels, feedback)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError

from console.live import LiveState
from consumer.processor import suggested_reply
from consumer.routing import RoutingPolicy
from model import TriageModel
from schemas.feedback import Feedback

#: what a request body may hold at most (a text longer than the service accepts is refused before this)
MAX_BODY_BYTES = 1 << 20


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    model: TriageModel,
    policy: RoutingPolicy,
    max_text_chars: int = 10_000,
    live: LiveState | None = None,
    metrics: Callable[[], dict[str, Any] | None] = lambda: None,
    publish_feedback: Callable[[Feedback], None] | None = None,
) -> FastAPI:
    app = FastAPI(title="inquiry-triage console", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("console").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/labels")
    def labels() -> dict[str, Any]:
        return {"intents": list(model.intent.labels), "feedback": publish_feedback is not None}

    @app.post("/api/classify")
    async def classify(request: Request) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, f"the request is over {MAX_BODY_BYTES // 1024} KiB")
        try:
            text = orjson.loads(raw).get("text") if raw else None
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, 'send JSON like {"text": "..."} in UTF-8')
        if not isinstance(text, str) or not text.strip():
            return _error(400, "type an inquiry first: the text is empty")
        if len(text) > max_text_chars:
            return _error(413, f"the text has {len(text):,} characters; the service takes at most {max_text_chars:,}")
        (prediction,) = await run_in_threadpool(model.predict, [text])
        route, reasons = policy.decide(prediction)
        reply = suggested_reply(model, text, prediction, route)
        return JSONResponse(
            {
                "intent": prediction.intent.model_dump(mode="json"),
                "sentiment": prediction.sentiment.model_dump(mode="json"),
                "route": route,
                "reasons": reasons,
                "reply": reply.model_dump(mode="json") if reply else None,
                "model": model.versions.model_dump(mode="json"),
            }
        )

    @app.get("/api/live")
    async def live_view() -> dict[str, Any]:
        view = live.snapshot() if live is not None else None
        return {"live": view, "service": await run_in_threadpool(metrics)}

    @app.post("/api/feedback")
    async def feedback(request: Request) -> JSONResponse:
        if publish_feedback is None:
            return _error(503, "no feedback topic is configured for this console")
        try:
            correction = Feedback.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        if correction.intent is not None and correction.intent not in model.intent.labels:
            return _error(400, f"{correction.intent} is not an intent of the model")
        await run_in_threadpool(publish_feedback, correction)
        return JSONResponse({"published": correction.event_id}, status_code=202)

    return app
