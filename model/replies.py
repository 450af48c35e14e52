"""Suggested replies: a library of reply templates per intent, shipped inside the intent artifact.

For an inquiry the bot may answer, the template whose example inquiry reads most like it (TF-IDF cosine over
words, within the predicted intent) is chosen, and the slots the inquiry itself fills (order or invoice number,
amount, email, account type) are filled from its text; the rest stay marked (``{{Website Name}}``) for the
responder or a templating step downstream. The library is a JSON file written by training (``replies.json``)
and named, with its hash, in the manifest.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from model.errors import ArtifactError
from schemas.events import ReplySlot, SuggestedReply

REPLIES_FILE = "replies.json"
LIBRARY_FORMAT = 1

SLOT = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# an order, invoice or reference number: 4+ digits, perhaps after an upper-case prefix (ORD-, INV#); not part of an
# amount or an email address
_REFERENCE = re.compile(r"(?:\b[A-Z]{2,5}[-#]?)?(?<![\d.,$€£])\d{4,}[\dA-Z-]*(?![\w.-]*@)")
_AMOUNT = re.compile(
    r"[$€£]\s?\d[\d,]*(?:\.\d{1,2})?|\b\d[\d,]*(?:\.\d{1,2})?\s?(?:dollars?|euros?|pounds?|usd|eur|gbp)\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _first(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def find(text: str) -> str | None:
        found = pattern.search(text)
        return found.group(0).strip() if found else None

    return find


#: slot name -> how to read its value from the inquiry; other slots stay marked
FILLERS: dict[str, Callable[[str], str | None]] = {
    "Order Number": _first(_REFERENCE),
    "Invoice Number": _first(_REFERENCE),
    "Refund Amount": _first(_AMOUNT),
    "Amount": _first(_AMOUNT),
    "Email": _first(_EMAIL),
    "Email Address": _first(_EMAIL),
}


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` with slot markers left out (a marker is no evidence of what was asked)."""
    return _WORD.findall(SLOT.sub(" ", text.lower()))


def slot_names(template: str) -> list[str]:
    return list(dict.fromkeys(name.strip() for name in SLOT.findall(template)))


@dataclass(frozen=True)
class ReplyTemplate:
    intent: str
    example: str  # the inquiry this reply answered, values replaced by their slot
    text: str  # the reply, with {{Slot}} markers


class ReplyLibrary:
    """Reply templates per intent, chosen by similarity to the inquiry; built once at load."""

    def __init__(self, templates: list[ReplyTemplate], version: str, values: dict[str, list[str]] | None = None):
        if not templates:
            raise ArtifactError("a reply library needs at least one template")
        self.version = version
        self.templates = templates
        #: slot -> the values it takes in the library's data (account types...): filled when the inquiry names one
        self.values = {slot: sorted(set(v), key=len, reverse=True) for slot, v in (values or {}).items()}
        documents = [Counter(words(t.example)) for t in templates]
        frequency: Counter[str] = Counter(word for document in documents for word in document)
        total = len(documents)
        self.idf = {word: math.log((1 + total) / (1 + n)) + 1.0 for word, n in frequency.items()}
        rows: dict[str, list[int]] = defaultdict(list)
        for index, template in enumerate(templates):
            rows[template.intent].append(index)
        #: intent -> (template indices, its words' columns, L2-normalised TF-IDF rows): one product per inquiry
        self._by_intent: dict[str, tuple[list[int], dict[str, int], npt.NDArray[np.float32]]] = {}
        for intent, indices in rows.items():
            columns = {word: c for c, word in enumerate(sorted({w for i in indices for w in documents[i]}))}
            matrix = np.zeros((len(indices), max(1, len(columns))), dtype=np.float32)
            for row, index in enumerate(indices):
                for word, weight in self._weights(documents[index]).items():
                    matrix[row, columns[word]] = weight
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            self._by_intent[intent] = (indices, columns, (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32))

    def _weights(self, counts: Counter[str]) -> dict[str, float]:
        return {word: (1.0 + math.log(n)) * self.idf.get(word, 1.0) for word, n in counts.items()}

    def suggest(self, text: str, intent: str) -> SuggestedReply | None:
        """The reply for ``text`` among ``intent``'s templates, slots filled from ``text``; None without one."""
        entry = self._by_intent.get(intent)
        if entry is None:
            return None
        indices, columns, matrix = entry
        query = self._weights(Counter(words(text)))
        norm = math.sqrt(sum(w * w for w in query.values()))
        vector = np.zeros(matrix.shape[1], dtype=np.float32)
        for word, weight in query.items():
            column = columns.get(word)
            if column is not None:
                vector[column] = weight
        scores = matrix @ vector
        best = int(np.argmax(scores))
        score = float(scores[best]) / norm if norm else 0.0
        reply, slots = self.fill(self.templates[indices[best]].text, text)
        # built from checked parts (a score clipped to 0-1): no validation on the hot path
        return SuggestedReply.model_construct(
            text=reply, confidence=round(max(0.0, min(1.0, score)), 4), slots=slots, library=self.version
        )

    def fill(self, template: str, text: str) -> tuple[str, list[ReplySlot]]:
        """``template`` with the slots ``text`` fills replaced by their values, and every slot's state."""
        slots = []
        filled: dict[str, str] = {}
        for name in slot_names(template):
            value = self._value(name, text)
            slots.append(ReplySlot.model_construct(name=name, value=value))
            if value is not None:
                filled[name] = value
        if not filled:
            return template, slots
        return SLOT.sub(lambda m: filled.get(m.group(1).strip(), m.group(0)), template), slots

    def _value(self, slot: str, text: str) -> str | None:
        filler = FILLERS.get(slot)
        if filler is not None:
            return filler(text)
        lowered = text.lower()
        for value in self.values.get(slot, ()):
            if re.search(rf"(?<!\w){re.escape(value.lower())}(?!\w)", lowered):
                return value
        return None

    @classmethod
    def load(cls, path: Path) -> ReplyLibrary:
        try:
            data: dict[str, Any] = orjson.loads(Path(path).read_bytes())
            if data.get("format") != LIBRARY_FORMAT:
                raise ArtifactError(f"{path}: reply library format {data.get('format')!r}, expected {LIBRARY_FORMAT}")
            templates = [ReplyTemplate(t["intent"], t["example"], t["text"]) for t in data["templates"]]
            return cls(templates, str(data["version"]), data.get("values") or {})
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ArtifactError(f"cannot read the reply library {path}: {exc}") from exc

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": LIBRARY_FORMAT,
                "version": self.version,
                "values": self.values,
                "templates": [{"intent": t.intent, "example": t.example, "text": t.text} for t in self.templates],
            }
        )
