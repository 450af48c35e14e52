"""Headers of a dead letter on ``inquiries.dlq``.

The dead letter's key and value are the original bytes, untouched, and its headers are the original
headers (less any whose name starts with ``triage``: those are the service's own, never taken from input)
followed by the ``triage.*`` headers below. Messages never contain inquiry text.
"""

from __future__ import annotations

from typing import Literal, cast

from pydantic import BaseModel, ConfigDict

#: decode: not a JSON object; validate: not an inquiry; inference: the model failed on it; encode: its enriched
#: event cannot be written (nesting too deep for JSON output, for one); publish: the broker refused it; crash:
#: the service died while processing it, ``crash_limit`` times
ErrorStage = Literal["decode", "validate", "inference", "encode", "publish", "crash"]

HEADER_STAGE = "triage.error.stage"
HEADER_CLASS = "triage.error.class"
HEADER_MESSAGE = "triage.error.message"
HEADER_TOPIC = "triage.source.topic"
HEADER_PARTITION = "triage.source.partition"
HEADER_OFFSET = "triage.source.offset"
HEADER_TIMESTAMP = "triage.failed_at"


class DeadLetterHeaders(BaseModel):
    """The ``triage.*`` headers of a dead letter, as strings on the wire."""

    model_config = ConfigDict(frozen=True)

    stage: ErrorStage
    error_class: str
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: str

    def to_kafka(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_STAGE, self.stage.encode()),
            (HEADER_CLASS, self.error_class.encode()),
            (HEADER_MESSAGE, self.message.encode("utf-8", "replace")),
            (HEADER_TOPIC, self.source_topic.encode()),
            (HEADER_PARTITION, str(self.source_partition).encode()),
            (HEADER_OFFSET, str(self.source_offset).encode()),
            (HEADER_TIMESTAMP, self.failed_at.encode()),
        ]

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]] | None) -> DeadLetterHeaders:
        found = {k: v.decode() for k, v in headers or [] if k.startswith("triage.")}
        return cls(
            stage=cast(ErrorStage, found[HEADER_STAGE]),  # pydantic checks it is one of them
            error_class=found[HEADER_CLASS],
            message=found[HEADER_MESSAGE],
            source_topic=found[HEADER_TOPIC],
            source_partition=int(found[HEADER_PARTITION]),
            source_offset=int(found[HEADER_OFFSET]),
            failed_at=found[HEADER_TIMESTAMP],
        )
