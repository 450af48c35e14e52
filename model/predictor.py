"""Intent + sentiment for a batch of inquiries."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from model.artifacts import Manifest, sha256_file
from model.classifier import CpuPlan, TextClassifier, choose_device, cpu_plan
from model.errors import ArtifactError, InferenceError
from model.replies import ReplyLibrary
from model.scope import ScopeGate
from schemas import IntentResult, LabelScore, ModelVersions, SentimentLabel, SentimentResult


@dataclass(frozen=True)
class Prediction:
    intent: IntentResult
    sentiment: SentimentResult


DEFAULT_CPU_PASS = 16
DEFAULT_GPU_PASS = 256


def default_pass_size(classifier: TextClassifier) -> int:
    """The most texts per forward pass where none is configured: the service's default, also used by evaluation."""
    return DEFAULT_GPU_PASS if classifier.device.device.type == "cuda" else DEFAULT_CPU_PASS


#: one forward pass: the classifier, the token ids of the batch, the positions to run, where their logits go
_Pass = tuple[TextClassifier, Sequence[Sequence[int]], npt.NDArray[np.intp], npt.NDArray[np.float32]]


def load_replies(directory: Path, manifest: Manifest) -> ReplyLibrary | None:
    """The reply library the manifest names, checked against its hash; None when the artifact has none."""
    if manifest.replies is None:
        return None
    path = directory / manifest.replies.file
    if not path.is_file():
        raise ArtifactError(f"{directory}: the manifest names a reply library {manifest.replies.file} that is missing")
    if sha256_file(path) != manifest.replies.sha256:
        raise ArtifactError(f"{path}: does not match the manifest's hash (changed after training?)")
    return ReplyLibrary.load(path)


class TriageModel:
    """The intent and sentiment classifiers the service runs, loaded from ``DIR/intent`` and ``DIR/sentiment``."""

    def __init__(
        self,
        intent: TextClassifier,
        sentiment: TextClassifier,
        top_k: int = 3,
        batch_size: int | None = None,
        cpu: CpuPlan | None = None,
        replies: ReplyLibrary | None = None,
    ):
        if intent.manifest.task != "intent" or sentiment.manifest.task != "sentiment":
            raise ArtifactError("expected an intent and a sentiment artifact")
        self.intent = intent
        self.sentiment = sentiment
        self.top_k = max(1, min(top_k, len(intent.labels)))
        # The most texts in a forward pass (a batch is sorted by length and cut into passes). On CPU small
        # passes win: less padding, and the cost per pass is small (`triage bench`: batches of 64 in passes of
        # 16 ran 1.2-1.4x faster than in one pass of 64), and the cut falls where padding would cost more
        # than a pass (TextClassifier.passes); a GPU wants the whole batch at once.
        self.batch_size = batch_size or default_pass_size(intent)
        self.versions = ModelVersions(intent=intent.version, sentiment=sentiment.version)
        self.scope = ScopeGate.for_tokenizer(intent.tokenizer)
        self.replies = replies
        # Both models are usually fine-tuned from the same base: then one tokenization serves both.
        signature = intent.tokenizer_signature
        self.shared_tokenizer = signature is not None and signature == sentiment.tokenizer_signature
        self._pool: ThreadPoolExecutor | None = None
        self.cpu: CpuPlan | None = None
        if intent.device.device.type == "cpu" and sentiment.device.device.type == "cpu":
            self.cpu = cpu or cpu_plan()
            if self.cpu.parallel_models:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-model")

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str = "auto",
        top_k: int = 3,
        batch_size: int | None = None,
        backend: str = "auto",
        bf16: bool = True,
        torch_threads: int | None = None,
        parallel_models: bool | None = None,
    ) -> TriageModel:
        """Load ``DIR/intent`` and ``DIR/sentiment``; ``backend`` and ``bf16`` as in :meth:`TextClassifier.load`,
        ``torch_threads`` and ``parallel_models`` as in :func:`~model.classifier.cpu_plan`."""
        model_dir = Path(model_dir)
        plan = cpu_plan(torch_threads, parallel_models) if choose_device(device).device.type == "cpu" else None
        threads = plan.threads if plan else None
        intent = TextClassifier.load(model_dir / "intent", device, backend, threads, bf16)
        return cls(
            intent,
            TextClassifier.load(model_dir / "sentiment", device, backend, threads, bf16),
            top_k=top_k,
            batch_size=batch_size,
            cpu=plan,
            replies=load_replies(model_dir / "intent", intent.manifest),
        )

    @property
    def backend_notes(self) -> dict[str, str]:
        """Why a model does not run its ONNX export, per model (empty when both do, or none was wanted)."""
        notes = {"intent": self.intent.backend_note, "sentiment": self.sentiment.backend_note}
        return {task: note for task, note in notes.items() if note}

    @property
    def runtime(self) -> str:
        runtimes = {self.intent.runtime, self.sentiment.runtime}
        return runtimes.pop() if len(runtimes) == 1 else f"{self.intent.runtime}+{self.sentiment.runtime}"

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Predict every text; raise :class:`InferenceError` if the model fails or yields non-finite scores."""
        if not texts:
            return []
        try:
            intent_probs, sentiment_probs = self._probabilities(texts)
        except InferenceError:
            raise
        except Exception as exc:  # a model can fail in many ways; the caller isolates the bad records
            # The message names the exception class only: exception texts may quote the input.
            raise InferenceError(f"model raised {type(exc).__name__}") from exc
        if not (np.isfinite(intent_probs).all() and np.isfinite(sentiment_probs).all()):
            raise InferenceError("model returned non-finite scores")
        return [
            self._prediction(i, s, self.scope.reason(text)) for i, s, text in zip(intent_probs, sentiment_probs, texts)
        ]

    def _probabilities(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        intent_ids = self.intent.encode(texts)
        if self.shared_tokenizer:  # the ids of the intent's tokenization, where the text steps leave a text alike
            sentiment_ids = self.sentiment.encode_like(texts, self.intent, intent_ids)
        else:
            sentiment_ids = self.sentiment.encode(texts)
        intent_out = np.empty((len(texts), len(self.intent.labels)), dtype=np.float32)
        sentiment_out = np.empty((len(texts), len(self.sentiment.labels)), dtype=np.float32)
        intent_plan = self.intent.passes(intent_ids, self.batch_size)
        # one tokenization, one cost per pass: one plan (its dynamic program is ~1 ms for a batch of 256)
        same_plan = sentiment_ids is intent_ids and self.sentiment.pass_cost_tokens == self.intent.pass_cost_tokens
        sentiment_plan = intent_plan if same_plan else self.sentiment.passes(sentiment_ids, self.batch_size)
        intent_passes = [(self.intent, intent_ids, index, intent_out) for index in intent_plan]
        sentiment_passes = [(self.sentiment, sentiment_ids, index, sentiment_out) for index in sentiment_plan]
        # Longest passes first, the two models' passes alternating: whichever thread is free takes the next,
        # so neither waits while the other model's passes remain (the two models need not cost the same).
        tasks: deque[_Pass] = deque(
            task
            for pair in zip_longest(reversed(intent_passes), reversed(sentiment_passes))
            for task in pair
            if task is not None
        )
        if self._pool is None:
            _drain(tasks)
        else:
            # Two threads, each running one pass at a time on its own cores: no thread team spans both, which
            # on a small CPU beats two threads synchronising on every operator of one network.
            helper = self._pool.submit(_drain, tasks)
            try:
                _drain(tasks)
            finally:
                helper.result()
        return self.intent.proba_from_logits(intent_out), self.sentiment.proba_from_logits(sentiment_out)

    def _prediction(
        self, intent_row: npt.NDArray[np.float32], sentiment_row: npt.NDArray[np.float32], scope: str | None = None
    ) -> Prediction:
        labels = self.intent.labels
        top = np.argsort(-intent_row)[: self.top_k]
        best = labels[top[0]]
        intent = IntentResult(
            label=best,
            category=self.intent.manifest.categories[best],
            confidence=_prob(intent_row[top[0]]),
            top_k=[LabelScore(label=labels[i], score=_prob(intent_row[i])) for i in top],
            out_of_scope=scope,
        )
        # the sentiment artifact's labels; pydantic checks they are SentimentLabels
        s_labels = cast(list[SentimentLabel], self.sentiment.labels)
        s_best = int(np.argmax(sentiment_row))
        sentiment = SentimentResult(
            label=s_labels[s_best],
            score=_prob(sentiment_row[s_best]),
            scores={label: _prob(p) for label, p in zip(s_labels, sentiment_row)},
        )
        return Prediction(intent=intent, sentiment=sentiment)


def _drain(tasks: deque[_Pass]) -> None:
    """Run queued forward passes until none is left (shared by the threads; a failure empties the queue)."""
    while True:
        try:
            classifier, ids, index, out = tasks.popleft()
        except IndexError:
            return
        try:
            classifier.run_pass(ids, index, out)
        except BaseException:
            tasks.clear()
            raise


def _prob(value: float) -> float:
    return round(min(1.0, max(0.0, float(value))), 6)
