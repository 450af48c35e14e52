"""What a human agent's tool publishes on the feedback topic: a correction of one routed inquiry."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, StrictStr, model_validator

from schemas.events import NonBlank, SentimentLabel


class Feedback(BaseModel):
    """``event_id`` of a routed inquiry and what the agent says it was; unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: NonBlank
    #: the intent the inquiry really had (a label of the serving model's taxonomy)
    intent: NonBlank | None = None
    sentiment: SentimentLabel | None = None
    #: the reply the agent sent, when it differs from the suggested one
    reply_used: NonBlank | None = None
    agent: StrictStr | None = None
    created_at: datetime | None = None

    @model_validator(mode="after")
    def _corrects_something(self) -> Self:
        if self.intent is None and self.sentiment is None and self.reply_used is None:
            raise ValueError("a feedback record names an intent, a sentiment or the reply used")
        return self
