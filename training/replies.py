"""Build the reply library an intent artifact ships (:mod:`model.replies`), and measure it.

From Bitext's 4k5 release (the only one with a ``response`` column) or from a reply column of a team's own file.
Bitext's responses were written for one inquiry each: the inquiry's own values (an order number, an amount, an
account type) are turned back into slots, in the reply and in the example inquiry, so a template answers any
inquiry of its kind, and the anonymised slot names of the release become the ones the service fills.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.artifacts import ReplyFile, sha256_file
from model.replies import REPLIES_FILE, SLOT, ReplyLibrary, ReplyTemplate
from training.data import BITEXT_4K5, normalise_key, read_csv_rows, template_key

#: the release's entity types -> the slot the service knows
ENTITY_SLOTS = {
    "order_id": "Order Number",
    "invoice_id": "Invoice Number",
    "refund_amount": "Refund Amount",
    "account_type": "Account Type",
    "person_name": "Person Name",
    "delivery_city": "Delivery City",
    "delivery_country": "Delivery Country",
}
#: how a library built from Bitext's 4k5 release records its source in the manifest
BITEXT_SOURCE = f"{BITEXT_4K5} (response)"
#: slots whose values the library keeps, so that one the inquiry names can be filled
KEPT_VALUES = ("Account Type",)
_ORDER_SLOT = re.compile(r"^(?:order|purchase)\s*(?:number|id|no)?\b", re.IGNORECASE)
_INVOICE_SLOT = re.compile(r"^(?:invoice|bill)\s*(?:number|id|no)?\b", re.IGNORECASE)


def canonical_slot(name: str) -> str:
    """``Purchase ID Anonymized`` -> ``Order Number``; ``Bill Number Anonymized`` -> ``Invoice Number``."""
    plain = re.sub(r"\s+anonymi[sz]ed$", "", name.strip(), flags=re.IGNORECASE)
    if plain != name.strip() or re.search(r"\b(number|id)\b", plain, re.IGNORECASE):
        if _ORDER_SLOT.match(plain):
            return "Order Number"
        if _INVOICE_SLOT.match(plain):
            return "Invoice Number"
    return plain


def _canonical(text: str) -> str:
    return SLOT.sub(lambda m: "{{" + canonical_slot(m.group(1)) + "}}", text)


def _blank(text: str, value: str, slot: str) -> str:
    """``text`` with ``value`` (as a whole word, any case) written as ``{{slot}}``."""
    if not value.strip():
        return text
    return re.sub(rf"(?<!\w){re.escape(value.strip())}(?!\w)", "{{" + slot + "}}", text, flags=re.IGNORECASE)


@dataclass(frozen=True)
class Row:
    """One inquiry of the release with its response and the value it names."""

    text: str
    intent: str
    response: str
    entity_type: str = ""
    entity_value: str = ""


def bitext_rows(data_dir: Path) -> list[Row]:
    return [
        Row(
            " ".join(r["instruction"].split()),
            r["intent"].strip(),
            r["response"].strip(),
            r.get("entity_type", "").strip(),
            r.get("entity_value", "").strip(),
        )
        for r in read_csv_rows(Path(data_dir) / BITEXT_4K5)
        if r.get("response", "").strip()
    ]


def template_of(row: Row) -> ReplyTemplate:
    slot = ENTITY_SLOTS.get(row.entity_type)
    example, reply = row.text, _canonical(row.response)
    if slot is not None:
        example, reply = _blank(example, row.entity_value, slot), _blank(reply, row.entity_value, slot)
    return ReplyTemplate(row.intent, example, reply)


def build_library(rows: Sequence[Row]) -> ReplyLibrary:
    """One template per distinct reply; the version is a hash of the templates."""
    seen: set[str] = set()
    templates = []
    values: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        template = template_of(row)
        key = normalise_key(template.text)
        if key not in seen:
            seen.add(key)
            templates.append(template)
        slot = ENTITY_SLOTS.get(row.entity_type)
        if slot in KEPT_VALUES and row.entity_value:
            values[slot].add(row.entity_value.lower())
    digest = hashlib.sha256("\n".join(f"{t.intent}\t{t.example}\t{t.text}" for t in templates).encode()).hexdigest()
    return ReplyLibrary(templates, f"replies-{digest[:12]}", {k: sorted(v) for k, v in values.items()})


def write_library(directory: Path, library: ReplyLibrary, source: str) -> ReplyFile:
    """``replies.json`` in the artifact directory, and the manifest's record of it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPLIES_FILE
    path.write_bytes(library.to_json())
    return ReplyFile(
        file=REPLIES_FILE,
        sha256=sha256_file(path),
        version=library.version,
        templates=len(library.templates),
        source=source,
    )


def split_rows(rows: Sequence[Row], share: float = 0.2) -> tuple[list[Row], list[Row]]:
    """(library rows, held-out rows): every fifth template group held out, so no held-out inquiry has its own
    reply (or a twin's) in the library."""
    library: list[Row] = []
    held: list[Row] = []
    step = max(2, round(1 / share))
    for row in rows:
        key = template_key(template_of(row).example)
        (held if int(hashlib.sha256(key.encode()).hexdigest(), 16) % step == 0 else library).append(row)
    return library, held


def _plain(value: str) -> str:
    return re.sub(r"[^0-9a-z]", "", value.lower()).lstrip("0")


def same_value(filled: str, annotated: str) -> bool:
    """Whether a filled value is the annotated one: compared without case, '#', spaces and leading zeros; the
    release's annotation cuts some numbers short ("3707955617" for "370795561790"), which counts as the same."""
    ours, theirs = _plain(filled), _plain(annotated)
    return bool(theirs) and (ours == theirs or (theirs.isdigit() and ours.isdigit() and ours.startswith(theirs)))


def measure_held_out(
    rows: Sequence[Row], held_texts: Iterable[str] | None, predict: Callable[[list[str]], list[str]]
) -> dict[str, Any]:
    """:func:`measure` on the rows whose inquiry is in ``held_texts`` (the model's held-out texts; None: every
    fifth template group, :func:`split_rows`), answered from a library of the other rows less every template the
    held-out ones share, by the intents ``predict`` gives. ``held_out`` 0 when no such split is left."""
    if held_texts is None:
        held = split_rows(rows)[1]
    else:
        keys = {normalise_key(text) for text in held_texts}
        held = [r for r in rows if normalise_key(r.text) in keys]
    templates = {template_key(template_of(r).example) for r in held}
    rest = [r for r in rows if template_key(template_of(r).example) not in templates]
    if not held or not rest:  # e.g. trained on 8k alone: every 4k5 inquiry is held out, no library is left
        return {"held_out": 0}
    return measure(build_library(rest), held, predict([r.text for r in held]))


def measure(library: ReplyLibrary, held: Sequence[Row], predicted: Sequence[str] | None = None) -> dict[str, Any]:
    """On held-out rows: how often the reply is for the right intent (with the model's intents, ``predicted``),
    and how often a value the inquiry names fills its slot: per slot, the share of held-out replies with that
    slot where the filled value is the one in the inquiry (``correct``), and where it is filled at all."""
    right = sum(p == r.intent for p, r in zip(predicted, held)) if predicted is not None else None
    slots: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "filled": 0, "correct": 0})
    confidences = []
    for row in held:
        reply = library.suggest(row.text, row.intent)
        if reply is None:
            continue
        confidences.append(reply.confidence)
        slot = ENTITY_SLOTS.get(row.entity_type)
        for state in reply.slots:
            if state.name != slot or not row.entity_value:
                continue
            counts = slots[slot]
            counts["n"] += 1
            counts["filled"] += state.value is not None
            counts["correct"] += state.value is not None and same_value(state.value, row.entity_value)
    return {
        "held_out": len(held),
        "templates": len(library.templates),
        "right_intent": round(right / len(held), 4) if right is not None and held else None,
        "mean_confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        "slots": {
            name: counts | {"correct_share": round(counts["correct"] / counts["n"], 4) if counts["n"] else None}
            for name, counts in sorted(slots.items())
        },
    }
