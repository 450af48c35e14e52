"""Event contracts of inquiry-triage: what comes in, what goes out, what a dead letter carries."""

from schemas.deadletter import DeadLetterHeaders, ErrorStage
from schemas.events import (
    ROUTES,
    SENTIMENT_LABELS,
    EnrichedEvent,
    InquiryEvent,
    IntentResult,
    LabelScore,
    ModelVersions,
    ReplySlot,
    Route,
    SentimentLabel,
    SentimentResult,
    SuggestedReply,
    Triage,
)

__all__ = [
    "ROUTES",
    "SENTIMENT_LABELS",
    "DeadLetterHeaders",
    "EnrichedEvent",
    "ErrorStage",
    "InquiryEvent",
    "IntentResult",
    "LabelScore",
    "ModelVersions",
    "ReplySlot",
    "Route",
    "SentimentLabel",
    "SentimentResult",
    "SuggestedReply",
    "Triage",
]
