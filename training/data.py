"""Loaders for the vendored Bitext intent data, normalised to (text, intent, category)."""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypedDict, TypeVar, Unpack

from training.slots import fill_slots, has_slots, slot_entity

BITEXT_4K5 = "bitext/customer_support_llm_training_4k5.csv"
BITEXT_8K = "bitext/customer_service_training_8k.csv"
RELEASES: dict[str, str] = {"4k5": BITEXT_4K5, "8k": BITEXT_8K}
#: a sample of Bitext's 27K release, the third release of the leave-one-release-out folds (data/bitext27k/SOURCE.md)
BITEXT_27K_SAMPLE = "bitext27k/bitext_27k_sample.csv"

#: category names of individual releases -> the name used by this project
CATEGORY_ALIASES: dict[str, str] = {
    "NEWSLETTER": "SUBSCRIPTION",
    "CANCEL": "CANCELLATION_FEE",
    "SHIPPING": "SHIPPING_ADDRESS",
}


@dataclass(frozen=True)
class Inquiry:
    """One labelled customer inquiry."""

    text: str
    intent: str
    category: str
    flags: str = ""
    source: str = ""


T = TypeVar("T")


def stratified_holdout(
    items: Sequence[T], share: float, seed: int, key: Callable[[T], Hashable]
) -> tuple[list[T], list[T]]:
    """Split off ``share`` of each ``key`` group (seeded, at least one item per group): (kept, held out).

    The held-out part fits the calibration temperature only; it is never trained on.
    """
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    rng = random.Random(seed)
    keep: list[T] = []
    hold: list[T] = []
    for name in sorted(groups, key=repr):
        group = groups[name][:]
        rng.shuffle(group)
        cut = max(1, round(len(group) * share))
        hold += group[:cut]
        keep += group[cut:]
    return keep, hold


def unify_category(category: str) -> str:
    name = category.strip().upper()
    return CATEGORY_ALIASES.get(name, name)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; a UTF-8 byte-order mark is dropped."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _inquiry(row: dict[str, str], text_column: str, source: str) -> Inquiry:
    return Inquiry(
        text=" ".join(row[text_column].split()),
        intent=row["intent"].strip(),
        category=unify_category(row["category"]),
        flags=(row.get("flags") or row.get("tags") or "").strip(),
        source=source,
    )


def load_bitext_4k5(path: Path, slot_augment: bool = False) -> list[Inquiry]:
    """The 4.5k LLM-training release; ``slot_augment`` adds a ``{{Slot}}`` copy of each entity row."""
    rows = read_csv_rows(path)
    out = [_inquiry(row, "instruction", "4k5") for row in rows]
    if slot_augment:
        out += [item for item in (_slotted(row) for row in rows) if item is not None]
    return dedupe(out)


def _slotted(row: dict[str, str]) -> Inquiry | None:
    if not row.get("entity_type") or not row.get("start_offset"):
        return None
    text = slot_entity(row["instruction"], row["entity_type"], int(row["start_offset"]), int(row["end_offset"]))
    if text is None:
        return None
    return replace(_inquiry(row, "instruction", "4k5"), text=" ".join(text.split()), source="4k5-slots")


def load_bitext_8k(path: Path) -> list[Inquiry]:
    """The 8k release (UTF-8 with BOM; category NEWSLETTER becomes SUBSCRIPTION)."""
    return dedupe(_inquiry(row, "utterance", "8k") for row in read_csv_rows(path))


def load_bitext_27k(path: Path, fill: bool = True, seed: int = 0) -> list[Inquiry]:
    """Bitext's 27K release (flags, instruction, category, intent[, response]).

    Its inquiries carry ``{{Order Number}}``-style slots; ``fill`` replaces them with seeded random values.
    """
    rng = random.Random(seed)
    out = []
    for row in read_csv_rows(path):
        item = _inquiry(row, "instruction", "27k")
        if fill and has_slots(item.text):
            item = replace(item, text=fill_slots(item.text, rng))
        out.append(item)
    return dedupe(out)


class LoadOptions(TypedDict, total=False):
    """The options :func:`load_bitext` passes on to the loader of the release it recognises."""

    slot_augment: bool
    fill: bool
    seed: int


def load_bitext(path: Path, **options: Unpack[LoadOptions]) -> list[Inquiry]:
    """Any Bitext release, recognised by its columns."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle))
    if "utterance" in header:
        return load_bitext_8k(path)
    if "entity_type" in header:
        return load_bitext_4k5(path, slot_augment=options.get("slot_augment", False))
    if "instruction" in header:
        return load_bitext_27k(path, fill=options.get("fill", True), seed=options.get("seed", 0))
    raise ValueError(f"{path}: not a Bitext release (columns {header})")


def load_release(data_dir: Path, name: str, slot_augment: bool = False) -> list[Inquiry]:
    """A vendored release by name (``4k5`` or ``8k``)."""
    if name not in RELEASES:
        raise ValueError(f"unknown Bitext release {name!r}; choose from {sorted(RELEASES)}")
    path = Path(data_dir) / RELEASES[name]
    return load_bitext_4k5(path, slot_augment) if name == "4k5" else load_bitext_8k(path)


def dedupe(items: Iterable[Inquiry]) -> list[Inquiry]:
    """Drop repeated texts (case- and space-insensitive), keeping the first."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalise_key(item.text)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def normalise_key(text: str) -> str:
    return " ".join(text.lower().split())


_VALUE = re.compile(r"\{\{[^{}]*\}\}|[$€£]?\s?#?\d[\d,.\-]*|[^\w\s]")


def template_key(text: str) -> str:
    """``text`` with its slots, numbers and punctuation blanked: the template it was written from.

    "cancel purchase 113542617735902?" and "cancel purchase {{Order Number}}" share one key, so a fold that
    scores the first when it trained on the second is caught.
    """
    return re.sub(r"#(?: #)+", "#", " ".join(_VALUE.sub(" # ", text.lower()).split()))


def entity_templates(path: Path) -> dict[str, str]:
    """normalise_key(text) -> template_key of its ``{{Slot}}`` form, for the 4k5 rows that name an entity."""
    out = {}
    for row in read_csv_rows(path):
        slotted = _slotted(row)
        if slotted is not None:
            out[normalise_key(" ".join(row["instruction"].split()))] = template_key(slotted.text)
    return out


def without_texts(items: Sequence[Inquiry], exclude: Iterable[Inquiry]) -> list[Inquiry]:
    """``items`` minus those whose text also occurs in ``exclude`` (keeps validation unseen)."""
    banned = {normalise_key(item.text) for item in exclude}
    return [item for item in items if normalise_key(item.text) not in banned]


def category_map(items: Iterable[Inquiry]) -> dict[str, str]:
    """intent -> category; raises if an intent appears under two categories."""
    out: dict[str, str] = {}
    for item in items:
        if out.setdefault(item.intent, item.category) != item.category:
            raise ValueError(f"intent {item.intent} is in {out[item.intent]} and {item.category}")
    return out
