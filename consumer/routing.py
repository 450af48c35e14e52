"""The routing policy: data (TOML) deciding auto_response vs human_agent, with reason codes."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer.errors import ConfigError
from model import Prediction
from schemas import Route

# Reason codes put on every event's triage.reasons.
REASON_HUMAN_INTENT = "intent_needs_human"
REASON_HUMAN_CATEGORY = "category_needs_human"
REASON_NEGATIVE = "negative_sentiment"
REASON_LOW_CONFIDENCE = "low_intent_confidence"
REASON_OUT_OF_SCOPE = "out_of_scope"
REASON_AUTOMATABLE = "automatable_intent"


class RoutingPolicy(BaseModel):
    """Human when the intent needs a person, the customer is negative, or the model is unsure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    human_intents: frozenset[str] = frozenset()
    human_categories: frozenset[str] = frozenset()
    negative_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    abstain_threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    @classmethod
    def default(cls) -> RoutingPolicy:
        text = resources.files("consumer").joinpath("policy.toml").read_text(encoding="utf-8")
        return cls._from_text(text, "built-in policy.toml")

    @classmethod
    def from_file(cls, path: str | Path | None) -> RoutingPolicy:
        if path is None:
            return cls.default()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read routing policy {path}: {exc}") from exc
        return cls._from_text(text, str(path))

    @classmethod
    def _from_text(cls, text: str, source: str) -> RoutingPolicy:
        try:
            data = tomllib.loads(text)
            return cls.model_validate(data.get("routing", {}))
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ConfigError(f"invalid routing policy in {source}: {exc}") from exc

    def decide(self, prediction: Prediction) -> tuple[Route, list[str]]:
        intent, sentiment = prediction.intent, prediction.sentiment
        reasons: list[str] = []
        if intent.label in self.human_intents:
            reasons.append(REASON_HUMAN_INTENT)
        if intent.category in self.human_categories:
            reasons.append(REASON_HUMAN_CATEGORY)
        if sentiment.label == "negative" and sentiment.score >= self.negative_threshold:
            reasons.append(REASON_NEGATIVE)
        if intent.out_of_scope is not None:
            reasons.append(REASON_OUT_OF_SCOPE)
        if intent.confidence < self.abstain_threshold:
            reasons.append(REASON_LOW_CONFIDENCE)
        if reasons:
            return "human_agent", reasons
        return "auto_response", [REASON_AUTOMATABLE]
