"""Pydantic v2 models of the inquiry event and of the triage block added to it.

The wire format is JSON (orjson). The input object is passed through untouched: the consumer validates
it with :class:`InquiryEvent` and publishes the original object plus a ``triage`` key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

Route = Literal["auto_response", "human_agent"]
ROUTES: tuple[Route, ...] = ("auto_response", "human_agent")
SentimentLabel = Literal["negative", "neutral", "positive"]
SENTIMENT_LABELS: tuple[SentimentLabel, ...] = ("negative", "neutral", "positive")

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain a non-whitespace character")
    return value


NonBlank = Annotated[StrictStr, AfterValidator(_not_blank)]


class InquiryEvent(BaseModel):
    """An inquiry as the contact-center platform sends it. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: NonBlank
    text: NonBlank
    customer_id: StrictStr | None = None
    channel: StrictStr | None = None
    created_at: datetime | None = None
    language: StrictStr | None = None


class LabelScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    score: Probability


class IntentResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    category: str
    confidence: Probability
    top_k: list[LabelScore] = Field(min_length=1)
    #: set when the text is none of the intents whatever the scores say: "no_words", "unsupported_script"
    out_of_scope: str | None = None


class SentimentResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: SentimentLabel
    score: Probability
    scores: dict[SentimentLabel, Probability]


class ModelVersions(BaseModel):
    model_config = ConfigDict(frozen=True)

    intent: str
    sentiment: str


class ReplySlot(BaseModel):
    """A ``{{name}}`` marker of a reply template; ``value`` is what the inquiry filled it with (None: still marked)."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str | None = None


class SuggestedReply(BaseModel):
    """A reply a bot may send for an inquiry routed to auto_response, from the intent model's reply library."""

    model_config = ConfigDict(frozen=True)

    text: str
    #: how closely the inquiry reads like the one the template answered (cosine similarity, 0-1)
    confidence: Probability
    slots: list[ReplySlot] = Field(default_factory=list)
    #: the reply library's version (it ships with the intent model)
    library: str


class Triage(BaseModel):
    """What the service adds to an inquiry under the ``triage`` key."""

    model_config = ConfigDict(frozen=True)

    intent: IntentResult
    sentiment: SentimentResult
    route: Route
    reasons: list[str]
    model: ModelVersions
    processed_at: datetime
    #: set on auto_response events when the intent model ships a reply library with a reply for the intent
    reply: SuggestedReply | None = None


class EnrichedEvent(InquiryEvent):
    """An inquiry plus its triage, as published on the routing topics."""

    triage: Triage
