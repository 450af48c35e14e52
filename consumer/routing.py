"""The routing policy: data (TOML) deciding auto_response vs human_agent, with reason codes."""

from __future__ import annotations

from pathlib import Path

from consumer.errors import ConfigError
from model import Prediction, TriageModel
from schemas import Route
from schemas.policy import PolicyError, PolicyRules

# Reason codes put on every event's triage.reasons.
REASON_HUMAN_INTENT = "intent_needs_human"
REASON_HUMAN_CATEGORY = "category_needs_human"
REASON_NEGATIVE = "negative_sentiment"
REASON_LOW_CONFIDENCE = "low_intent_confidence"
REASON_OUT_OF_SCOPE = "out_of_scope"
REASON_AUTOMATABLE = "automatable_intent"


class RoutingPolicy(PolicyRules):
    """Human when the intent needs a person, the customer is negative, or the model is unsure."""

    @classmethod
    def default(cls) -> RoutingPolicy:
        try:
            return super().default()
        except PolicyError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path | None) -> RoutingPolicy:
        try:
            return super().from_file(path)
        except PolicyError as exc:
            raise ConfigError(str(exc)) from exc

    def check_fits(self, model: TriageModel) -> None:
        """Refuse a model whose intents or categories this policy does not fit (``ConfigError`` with the names)."""
        manifest = model.intent.manifest
        problems = self.fit_problems(manifest.labels, manifest.categories.values())
        if problems:
            raise ConfigError(f"routing policy and intent model {manifest.version} do not fit: {'; '.join(problems)}")

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
