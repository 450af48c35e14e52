from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import DeadLetterHeaders, InquiryEvent


def test_inquiry_keeps_unknown_fields_and_checks_known_ones():
    event = InquiryEvent.model_validate({"event_id": "e", "text": "hi", "channel": "chat", "vip": True})
    assert event.model_extra == {"vip": True}
    for bad in (
        {"event_id": "", "text": "hi"},
        {"event_id": "e", "text": " \n\t"},
        {"event_id": 1, "text": "hi"},
        {"event_id": "e", "text": 1},
        {"event_id": "e"},
        {"event_id": "e", "text": "hi", "channel": 3},
        {"event_id": "e", "text": "hi", "created_at": "yesterday-ish"},
    ):
        with pytest.raises(ValidationError):
            InquiryEvent.model_validate(bad)


def test_dead_letter_headers_round_trip():
    headers = DeadLetterHeaders(
        stage="decode",
        error_class="InvalidJson",
        message="m",
        source_topic="t",
        source_partition=2,
        source_offset=9,
        failed_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
    )
    wire = [("trace", b"x")] + headers.to_kafka()
    assert DeadLetterHeaders.from_kafka(wire) == headers
    assert all(isinstance(v, bytes) for _, v in wire)
