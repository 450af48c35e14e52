"""A team's own labelled inquiries (`triage train intent --data FILE`): read, check against the routing policy,
and split for validation with near-duplicates kept on one side."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from schemas.policy import PolicyError, PolicyRules
from training.data import Inquiry, normalise_key, template_key
from training.errors import TaxonomyError
from training.replies import Row

#: an intent with fewer examples cannot be both learnt and validated
MIN_EXAMPLES = 10
#: share of each intent held out for validation and the calibration temperature
VALIDATION_SHARE = 0.15
#: rows named in an error message before "and N more"
SHOWN_ROWS = 5
JSON_LINES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    label: str = "intent"
    category: str | None = None  # without one, each intent is its own category


def _rows_of(path: Path) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    """(column names, [(row number as a person counts it, row)]) of a CSV (header row) or JSON-lines file."""
    try:
        if path.suffix.lower() in JSON_LINES:
            rows: list[tuple[int, dict[str, object]]] = []
            with open(path, encoding="utf-8-sig") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        value = json.loads(line)
                    except ValueError as exc:
                        raise TaxonomyError(f"{path}: line {number} is not JSON: {exc}") from exc
                    if not isinstance(value, dict):
                        raise TaxonomyError(f"{path}: line {number} is not a JSON object")
                    rows.append((number, value))
            columns = sorted({key for _, row in rows for key in row})
            return columns, rows
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [(number, dict(row)) for number, row in enumerate(reader, start=2)]  # row 1 is the header
            return list(reader.fieldnames or []), rows
    except FileNotFoundError as exc:
        raise TaxonomyError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise TaxonomyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    except (OSError, csv.Error) as exc:
        raise TaxonomyError(f"{path}: cannot read it: {exc}") from exc


def _require_columns(path: Path, names: list[str], wanted: list[str], hint: str = "") -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise TaxonomyError(
            f"{path}: no column {', '.join(map(repr, missing))}; the file has {', '.join(map(repr, names)) or 'none'}"
            + hint
        )


def _listed(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:SHOWN_ROWS]))
    return shown + (f" and {len(numbers) - SHOWN_ROWS} more" if len(numbers) > SHOWN_ROWS else "")


def _text(value: object) -> str:
    """A cell as one line of text (a JSON number or boolean as written; null and a missing key as empty)."""
    return "" if value is None else " ".join(str(value).split())


def read_labelled(path: Path, columns: Columns) -> list[Inquiry]:
    """The inquiries of ``path``; every problem found is reported at once (``TaxonomyError``)."""
    path = Path(path)
    names, rows = _rows_of(path)
    wanted = [c for c in (columns.text, columns.label, columns.category) if c is not None]
    _require_columns(path, names, wanted, " (choose with --text-column, --label-column, --category-column)")
    if not rows:
        raise TaxonomyError(f"{path}: no rows")
    problems = []
    blank_text = [n for n, row in rows if not _text(row.get(columns.text))]
    blank_label = [n for n, row in rows if not _text(row.get(columns.label))]
    if blank_text:
        problems.append(f"empty text in {len(blank_text)} row(s): {_listed(blank_text)}")
    if blank_label:
        problems.append(f"empty label in {len(blank_label)} row(s): {_listed(blank_label)}")
    blank_category = []
    if columns.category is not None:
        blank_category = [n for n, row in rows if not _text(row.get(columns.category))]
        if blank_category:
            problems.append(f"empty category in {len(blank_category)} row(s): {_listed(blank_category)}")
    if problems:
        raise TaxonomyError(f"{path}: " + "; ".join(problems))
    return [
        Inquiry(
            text=_text(row[columns.text]),
            intent=_text(row[columns.label]),
            category=_text(row[columns.category]) if columns.category is not None else _text(row[columns.label]),
            source=f"{path.name}:{number}",
        )
        for number, row in rows
    ]


def unique(items: Iterable[Inquiry]) -> list[Inquiry]:
    """The first of each text (case and spacing ignored) that carries one label; a text under two labels is an
    error, since the model could not learn both and validation could not score it."""
    first: dict[str, Inquiry] = {}
    clashes: dict[str, set[str]] = defaultdict(set)
    for item in items:
        key = normalise_key(item.text)
        kept = first.setdefault(key, item)
        if kept.intent != item.intent:
            clashes[key].update((kept.intent, item.intent))
    if clashes:
        shown = "; ".join(f"{key!r}: {', '.join(sorted(labels))}" for key, labels in list(clashes.items())[:SHOWN_ROWS])
        raise TaxonomyError(f"{len(clashes)} text(s) carry two different labels: {shown}")
    return list(first.values())


def check(items: list[Inquiry], policy: PolicyRules | None, min_examples: int = MIN_EXAMPLES) -> dict[str, str]:
    """intent -> category, or ``TaxonomyError`` with every reason the data cannot make a model for the policy."""
    problems = []
    counts = Counter(item.intent for item in items)
    if len(counts) < 2:
        problems.append(f"one label only ({', '.join(counts) or 'none'}): a classifier needs two or more")
    few = sorted((label, n) for label, n in counts.items() if n < min_examples)
    if few:
        problems.append(
            f"fewer than {min_examples} examples (--min-examples) for: "
            + ", ".join(f"{label} ({n})" for label, n in few)
        )
    categories: dict[str, set[str]] = defaultdict(set)
    for item in items:
        categories[item.intent].add(item.category)
    split = sorted(label for label, names in categories.items() if len(names) > 1)
    if split:
        problems.append(
            "intents under two or more categories: "
            + "; ".join(f"{label} ({', '.join(sorted(categories[label]))})" for label in split)
        )
    mapping = {label: sorted(names)[0] for label, names in categories.items()}
    if policy is not None:
        problems += policy.fit_problems(mapping, mapping.values(), holder="data")
    if problems:
        raise TaxonomyError("cannot train on this data: " + "; ".join(problems))
    return mapping


def validation_split(
    items: list[Inquiry], share: float = VALIDATION_SHARE, seed: int = 13
) -> tuple[list[Inquiry], list[Inquiry]]:
    """(train, validation): about ``share`` of each intent held out, whole groups of near-duplicates at a time
    (texts that differ only in numbers, punctuation or case), so no validation text has a twin in training."""
    rng = random.Random(seed)
    by_label: dict[str, dict[str, list[Inquiry]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        by_label[item.intent][template_key(item.text)].append(item)
    train: list[Inquiry] = []
    held: list[Inquiry] = []
    for label in sorted(by_label):
        groups = [by_label[label][key] for key in sorted(by_label[label])]
        if len(groups) < 2:
            raise TaxonomyError(
                f"every example of {label} is the same text with other numbers or punctuation: write other wordings"
            )
        rng.shuffle(groups)
        total = sum(map(len, groups))
        taken = 0
        for index, group in enumerate(groups):
            # hold out until the share is reached, always one group at least and never the last one
            if index < len(groups) - 1 and (taken == 0 or taken + len(group) <= round(total * share)):
                held += group
                taken += len(group)
            else:
                train += group
    return train, held


def load_policy(path: Path | None) -> PolicyRules:
    """The routing policy training checks the data against (the built-in one without ``path``)."""
    try:
        return PolicyRules.from_file(path)
    except PolicyError as exc:
        raise TaxonomyError(str(exc)) from exc


def read_replies(path: Path, columns: Columns, reply_column: str) -> list[Row]:
    """(inquiry, intent, reply) rows of a team's file for the reply library; rows without a reply are skipped."""
    path = Path(path)
    names, rows = _rows_of(path)
    _require_columns(path, names, [columns.text, columns.label, reply_column])
    found = [
        Row(_text(row.get(columns.text)), _text(row.get(columns.label)), str(row.get(reply_column) or "").strip())
        for _, row in rows
    ]
    found = [r for r in found if r.text and r.intent and r.response]
    if not found:
        raise TaxonomyError(f"{path}: no row has a text, a label and a reply in {reply_column!r}")
    return found
