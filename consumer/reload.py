"""Model hot reload: new artifacts are loaded beside the running model, checked, then swapped in
between batches without leaving the consumer group. A model that fails to load or to predict is
refused and the running one kept; the same version is tried again later, with a growing delay, since the
failure may have been passing (an artifact still being copied, memory short for a moment)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import structlog

from consumer.processor import Processor
from consumer.settings import Settings
from model import Manifest, ModelError, TriageModel
from model.artifacts import read_manifest

# Inquiries a new model must score (finite, valid labels) before it may serve.
CANARY_TEXTS = [
    "I forgot my password",
    "I want a refund for my order",
    "this is the worst service ever, I am furious",
    "thank you, that was quick",
    "where is my package?",
]
#: a refused version is tried again after RETRY_FIRST_S, then twice as long each time, up to RETRY_MAX_S
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0


class ModelReloader:
    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        load: Callable[[], TriageModel],
        on_swap: Callable[[TriageModel], None] | None = None,
        on_refuse: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.processor = processor
        self.load = load
        self.on_swap = on_swap
        self.on_refuse = on_refuse
        self.log = structlog.get_logger("triage.reload")
        self.clock = clock
        #: refused versions -> (refusals so far, monotonic time before which the version is not tried again)
        self.refused: dict[tuple[str, ...], tuple[int, float]] = {}
        self._next_check = self.clock() + settings.reload_interval_s
        self._pending: tuple[tuple[str, ...], Future[TriageModel]] | None = None
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-reload")

    def _current(self) -> tuple[str, ...]:
        model = self.processor.model
        return _fingerprint(model.intent.manifest) + _fingerprint(model.sentiment.manifest)

    def _on_disk(self) -> tuple[str, ...] | None:
        """(intent version, its additions' hashes, sentiment version, its additions' hashes) in MODEL_DIR.

        Additions count: an export added by `triage export-onnx`, or replies by `triage train replies`, to the
        running version is a new model to load.
        """
        try:
            return _fingerprint(read_manifest(self.settings.model_dir / "intent")) + _fingerprint(
                read_manifest(self.settings.model_dir / "sentiment")
            )
        except ModelError:
            return None  # mid-write or removed: look again later

    def tick(self) -> None:
        """Called by the runner between batches: finish a pending load, or look for a new version."""
        if self._pending is not None:
            self._complete(*self._pending)
            return
        if self.settings.reload_interval_s <= 0 or self.clock() < self._next_check:
            return
        self._next_check = self.clock() + self.settings.reload_interval_s
        versions = self._on_disk()
        if versions is None or versions == self._current():
            return
        if versions in self.refused and self.clock() < self.refused[versions][1]:
            return
        self.log.info("model_reload_started", intent=versions[0], sentiment=versions[2])
        self._pending = (versions, self._loader.submit(self._load_and_check))

    def _load_and_check(self) -> TriageModel:
        model = self.load()
        self.processor.policy.check_fits(model)  # a model for another taxonomy never serves under this policy
        predictions = model.predict(CANARY_TEXTS)
        scores = [p.intent.confidence for p in predictions] + [p.sentiment.score for p in predictions]
        if len(predictions) != len(CANARY_TEXTS) or not np.isfinite(scores).all():
            raise ModelError("the new model failed its canary predictions")
        return model

    def _complete(self, versions: tuple[str, ...], future: Future[TriageModel]) -> None:
        if not future.done():
            return
        self._pending = None
        try:
            model = future.result()
        except Exception as exc:  # any failure of a new model keeps the old one serving
            refusals = self.refused.get(versions, (0, 0.0))[0] + 1
            retry_in = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (refusals - 1))
            self.refused[versions] = (refusals, self.clock() + retry_in)
            current = self._current()
            self.log.error(
                "model_reload_refused",
                intent=versions[0],
                sentiment=versions[2],
                error=f"{type(exc).__name__}: {exc}"[:300],
                serving=[current[0], current[2]],
                refusals=refusals,
                retry_in_s=retry_in,
            )
            if self.on_refuse:
                self.on_refuse()
            return
        self.processor.model = model
        self.refused.pop(versions, None)
        self.log.info(
            "model_reloaded",
            intent=model.versions.intent,
            sentiment=model.versions.sentiment,
            runtime=model.runtime,
            onnx_unused=model.backend_notes or None,
        )
        if self.on_swap:
            self.on_swap(model)

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)


def _fingerprint(manifest: Manifest) -> tuple[str, str]:
    """(version, what was added to that version since: its ONNX export and reply library, by their hashes)."""
    onnx = manifest.onnx.sha256 if manifest.onnx is not None else ""
    replies = manifest.replies.sha256 if manifest.replies is not None else ""
    return manifest.version, f"{onnx}:{replies}"
