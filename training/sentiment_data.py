"""Sentiment sources mapped to negative / neutral / positive in the customer-service register."""

from __future__ import annotations

import difflib
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training import data as bitext

NEGATIVE, NEUTRAL, POSITIVE = "negative", "neutral", "positive"

#: Bitext intents whose inquiries report a problem or grievance
NEGATIVE_INTENTS = frozenset({"complaint", "payment_issue", "registration_problems"})
#: words that make an inquiry a problem report ("I can't track my order", "error updating my address")
PROBLEM_RE = re.compile(
    r"\b(problems?|issues?|troubles?|errors?|wrong|broken|fail(ed|s|ing)?|not working|does(n't| not) work|"
    r"can'?t|cannot|can not|unable|won'?t|isn'?t|didn'?t|never|unhappy|not happy|disappointed|angry)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Labeled:
    text: str
    label: str
    source: str


# ---- label mappings -------------------------------------------------------------------------------


def bitext_sentiment(text: str, intent: str, flags: str = "") -> str:
    """Complaints, problem reports and offensive (W-flagged) inquiries are negative; other requests neutral."""
    if intent in NEGATIVE_INTENTS or "W" in flags or PROBLEM_RE.search(text):
        return NEGATIVE
    return NEUTRAL


def goemotions_sentiment(emotions: Iterable[str], polarity: dict[str, str]) -> str | None:
    """Multi-label emotions -> one sentiment, or None for rows left out.

    Positive or negative emotions decide (ambiguous ones and ``neutral`` do not count); rows with both
    polarities, or only ambiguous emotions (surprise, curiosity, confusion, realization), are left out.
    """
    kinds = {polarity.get(e, "neutral") for e in emotions}
    if POSITIVE in kinds and NEGATIVE in kinds:
        return None
    if POSITIVE in kinds or NEGATIVE in kinds:
        return POSITIVE if POSITIVE in kinds else NEGATIVE
    return NEUTRAL if kinds == {"neutral"} else None


def sst5_sentiment(level: int, keep_neutral: bool = False) -> str | None:
    """0-1 negative, 3-4 positive; 2 (neutral about a film) only when ``keep_neutral``."""
    if level <= 1:
        return NEGATIVE
    if level >= 3:
        return POSITIVE
    return NEUTRAL if keep_neutral else None


# ---- readers --------------------------------------------------------------------------------------

_DETOK = [
    (re.compile(r" n ?'t\b"), "n't"),
    (re.compile(r" '(s|re|ve|ll|d|m)\b"), r"'\1"),
    (re.compile(r" ([.,!?;:%)])"), r"\1"),
    (re.compile(r"([($]) "), r"\1"),
    (re.compile(r"-lrb- |-rrb- ?"), ""),
]


def detokenize(text: str) -> str:
    """Undo PTB-style tokenisation of SST and the review sentences (``do n't`` -> ``don't``)."""
    for pattern, repl in _DETOK:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


def _label_lines(path: Path) -> Iterable[tuple[int, str]]:
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        head, _, text = line.partition(" ")
        if head.isdigit() and text.strip():
            yield int(head), detokenize(text)


def load_goemotions(data_dir: Path, split: str) -> list[Labeled]:
    root = Path(data_dir) / "goemotions"
    names = (root / "emotions.txt").read_text().split()
    polarity = {e: kind for kind, emos in json.loads((root / "sentiment_dict.json").read_text()).items() for e in emos}
    out = []
    for line in (root / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        text, ids, _ = line.split("\t")
        label = goemotions_sentiment([names[int(i)] for i in ids.split(",")], polarity)
        if label:
            out.append(Labeled(text, label, f"goemotions-{split}"))
    return out


def load_sst5(data_dir: Path, split: str, keep_neutral: bool = False) -> list[Labeled]:
    rows = (
        (sst5_sentiment(level, keep_neutral), text)
        for level, text in _label_lines(Path(data_dir) / "sst5" / f"{split}.txt")
    )
    return [Labeled(text, label, f"sst5-{split}") for label, text in rows if label]


def load_customer_reviews(data_dir: Path) -> list[Labeled]:
    path = Path(data_dir) / "customer_reviews" / "custrev.txt"
    return [Labeled(text, POSITIVE if level else NEGATIVE, "customer_reviews") for level, text in _label_lines(path)]


def load_tweeteval(data_dir: Path, split: str) -> list[Labeled]:
    root = Path(data_dir) / "tweeteval"
    names = {0: NEGATIVE, 1: NEUTRAL, 2: POSITIVE}
    texts = (root / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (root / f"{split}_labels.txt").read_text().split()
    return [Labeled(t.strip(), names[int(y)], f"tweeteval-{split}") for t, y in zip(texts, labels, strict=True)]


#: share of TweetEval val held out for validation; the rest is the only tweet-register text the mix trains on
TWEETEVAL_VAL_HOLDOUT = 0.25


def split_tweeteval_val(data_dir: Path) -> tuple[list[Labeled], list[Labeled]]:
    """TweetEval val cut in two with a fixed shuffle: (trained on, held out). TweetEval test is never trained on."""
    rows = load_tweeteval(data_dir, "val")
    order = list(range(len(rows)))
    random.Random(13).shuffle(order)
    cut = len(rows) - round(len(rows) * TWEETEVAL_VAL_HOLDOUT)
    train = [Labeled(rows[i].text, rows[i].label, "tweeteval-val-train") for i in order[:cut]]
    held = [Labeled(rows[i].text, rows[i].label, "tweeteval-val-holdout") for i in order[cut:]]
    return train, held


def _labeled_csv(path: Path, source: str) -> list[Labeled]:
    """A ``text,label`` CSV written for this project."""
    return [Labeled(r["text"], r["label"], source) for r in bitext.read_csv_rows(path)]


def load_probe(data_dir: Path) -> list[Labeled]:
    """The hand-written customer-service probe (60 messages; a sanity check, not a benchmark)."""
    return _labeled_csv(Path(data_dir) / "probe" / "customer_service_probe.csv", "probe")


def load_holdout(data_dir: Path) -> list[Labeled]:
    """295 customer-service messages written apart from the training set (data/probe/SOURCE.md); never trained on."""
    return _labeled_csv(Path(data_dir) / "probe" / "customer_service_holdout.csv", "cs-holdout")


#: emoji customers end a message with, by the sentiment the message already has (``cs-holdout-emoji``)
FITTING_EMOJI = {
    NEGATIVE: ("😡", "😠", "😤", "🙄", "😞", "😢", "😭", "👎"),
    NEUTRAL: ("🙂", "🤔", "📦", "⏳"),
    POSITIVE: ("😊", "👍", "🙏", "❤️", "😍", "🎉", "👏", "🥰"),
}


def with_fitting_emoji(rows: Sequence[Labeled], seed: int = 0) -> list[Labeled]:
    """Each row with one emoji that fits its label appended (seeded): does an emoji help the model, or
    throw it off? A model that reads emoji as unknown tokens let "where is my order 😡" pass as neutral."""
    rng = random.Random(seed)
    return [Labeled(f"{r.text} {rng.choice(FITTING_EMOJI[r.label])}", r.label, f"{r.source}-emoji") for r in rows]


def _fingerprint(text: str) -> tuple[str, frozenset[str], str]:
    """(text without case or punctuation, its words, text without case) for :func:`near_duplicate`."""
    plain = " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())
    return plain, frozenset(plain.split()), " ".join(text.lower().split())


def _near(a: tuple[str, frozenset[str], str], b: tuple[str, frozenset[str], str]) -> bool:
    (pa, wa, la), (pb, wb, lb) = a, b
    if not wa or not wb:  # emoji or punctuation only: compare as written
        return la == lb
    shared = len(wa & wb)
    if shared >= 0.7 * len(wa | wb) or (min(len(wa), len(wb)) >= 4 and shared >= 0.9 * min(len(wa), len(wb))):
        return True
    match = difflib.SequenceMatcher(None, pa, pb, autojunk=False)
    return match.real_quick_ratio() >= 0.9 and match.quick_ratio() >= 0.9 and match.ratio() >= 0.9


def near_duplicate(a: str, b: str) -> bool:
    """The same message up to case, punctuation, a typo, a few words or a wrapper around it.

    Any of: 70% of the two messages' words shared (Jaccard); nine in ten of the shorter one's words (four or
    more) inside the longer; characters at least 90% alike (difflib ratio, case and punctuation ignored).
    """
    return _near(_fingerprint(a), _fingerprint(b))


def near_duplicates(texts: Iterable[str], others: Iterable[str]) -> list[str]:
    """The ``texts`` that are a :func:`near_duplicate` of any of ``others``."""
    held = [_fingerprint(other) for other in others]
    return [text for text, mark in ((t, _fingerprint(t)) for t in texts) if any(_near(mark, other) for other in held)]


def evaluation_messages(data_dir: Path) -> list[Labeled]:
    """The customer-service messages the sentiment model is judged on: the holdout and the probe."""
    return [*load_holdout(data_dir), *load_probe(data_dir)]


def load_written(data_dir: Path) -> list[Labeled]:
    """Customer-service messages written for training (see data/written/SOURCE.md).

    The 1,250 rows of the file less any near duplicate (:func:`near_duplicate`) of an evaluation message, so the
    holdout and the probe stay unseen: 1,218 rows with the vendored files.
    """
    rows = _labeled_csv(Path(data_dir) / "written" / "customer_service_messages.csv", "cs-written")
    close = set(near_duplicates([r.text for r in rows], [e.text for e in evaluation_messages(data_dir)]))
    return [r for r in rows if r.text not in close]


def load_bitext_sentiment(data_dir: Path, release: str) -> list[Labeled]:
    return [
        Labeled(x.text, bitext_sentiment(x.text, x.intent, x.flags), f"bitext-{release}")
        for x in bitext.load_release(data_dir, release)
    ]


# ---- the training mix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MixPart:
    """Take at most ``cap`` rows of ``label`` from ``source`` (None = all)."""

    source: str
    label: str
    cap: int | None


#: the shipped mix (see data/README.md, "Sentiment mix"); caps keep the defaults within minutes on 2 CPUs
DEFAULT_MIX: tuple[MixPart, ...] = (
    MixPart("bitext-8k", NEUTRAL, 3500),
    MixPart("bitext-8k", NEGATIVE, None),
    MixPart("goemotions-train", NEGATIVE, 2500),
    MixPart("goemotions-train", POSITIVE, 2500),
    MixPart("goemotions-train", NEUTRAL, 3000),
    MixPart("sst5-train", NEGATIVE, None),
    MixPart("sst5-train", POSITIVE, 1000),
    MixPart("customer_reviews", NEGATIVE, None),
    MixPart("customer_reviews", POSITIVE, 800),
    MixPart("cs-written", NEGATIVE, None),
    MixPart("cs-written", NEUTRAL, None),
    MixPart("cs-written", POSITIVE, None),
    # tweets to a brand's account: the register of TweetEval, whose broad neutral the other sources lack
    MixPart("tweeteval-val-train", NEGATIVE, None),
    MixPart("tweeteval-val-train", NEUTRAL, None),
    MixPart("tweeteval-val-train", POSITIVE, None),
)

#: source name -> (loader, file paths relative to the data dir) for training sources
TRAIN_SOURCES: dict[str, tuple[Callable[[Path], list[Labeled]], list[str]]] = {
    "bitext-8k": (lambda d: load_bitext_sentiment(d, "8k"), [bitext.BITEXT_8K]),
    "goemotions-train": (
        lambda d: load_goemotions(d, "train"),
        ["goemotions/train.tsv", "goemotions/emotions.txt", "goemotions/sentiment_dict.json"],
    ),
    "sst5-train": (lambda d: load_sst5(d, "train"), ["sst5/train.txt"]),
    "customer_reviews": (load_customer_reviews, ["customer_reviews/custrev.txt"]),
    "cs-written": (load_written, ["written/customer_service_messages.csv"]),
    "tweeteval-val-train": (
        lambda d: split_tweeteval_val(d)[0],
        ["tweeteval/val_text.txt", "tweeteval/val_labels.txt"],
    ),
}

#: validation sources, none of them trained on (name -> loader, files)
VALIDATION_SOURCES: dict[str, tuple[Callable[[Path], list[Labeled]], list[str]]] = {
    "tweeteval-val-holdout": (
        lambda d: split_tweeteval_val(d)[1],
        ["tweeteval/val_text.txt", "tweeteval/val_labels.txt"],
    ),
    "tweeteval-test": (lambda d: load_tweeteval(d, "test"), ["tweeteval/test_text.txt", "tweeteval/test_labels.txt"]),
    "bitext-4k5": (lambda d: load_bitext_sentiment(d, "4k5"), [bitext.BITEXT_4K5]),
    "goemotions-test": (lambda d: load_goemotions(d, "test"), ["goemotions/test.tsv"]),
    "probe": (load_probe, ["probe/customer_service_probe.csv"]),
    "cs-holdout": (load_holdout, ["probe/customer_service_holdout.csv"]),
    # the same messages, each ending in an emoji that fits its label (with_fitting_emoji)
    "cs-holdout-emoji": (
        lambda d: with_fitting_emoji(load_holdout(d)),
        ["probe/customer_service_holdout.csv"],
    ),
}

#: share of each (source, label) part of the mix held out to fit the temperature, never trained on
CALIBRATION_SHARE = 0.1
#: the name the held-out part goes by in the manifest's metrics
CALIBRATION_SET = "mix-holdout"


def build_mix(data_dir: Path, mix: Sequence[MixPart] = DEFAULT_MIX, seed: int = 13) -> list[Labeled]:
    """The training rows of ``mix``, sampled with ``seed``, texts de-duplicated."""
    rng = random.Random(seed)
    pools: dict[tuple[str, str], list[Labeled]] = defaultdict(list)
    for source in sorted({part.source for part in mix}):
        for row in TRAIN_SOURCES[source][0](data_dir):
            pools[source, row.label].append(row)
    out: list[Labeled] = []
    for part in mix:
        pool = pools[part.source, part.label]
        out += pool if part.cap is None or part.cap >= len(pool) else rng.sample(pool, part.cap)
    return dedupe_labeled(out)


def split_mix(
    data_dir: Path, mix: Sequence[MixPart] = DEFAULT_MIX, seed: int = 13
) -> tuple[list[Labeled], list[Labeled]]:
    """The rows of ``mix`` as (trained on, held out to fit the temperature): CALIBRATION_SHARE of each
    (source, label), never trained on."""
    mixed = build_mix(data_dir, mix, seed)
    return bitext.stratified_holdout(mixed, CALIBRATION_SHARE, seed, key=lambda r: (r.source, r.label))


def dedupe_labeled(rows: Iterable[Labeled]) -> list[Labeled]:
    seen: set[str] = set()
    out = []
    for row in rows:
        key = bitext.normalise_key(row.text)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
