"""Leave-one-release-out folds, their calibration, augmentation and the evaluation report."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from tests.paths import DATA_DIR
from training import data as bitext
from training.augment import PROTECTED, Augmentation, augment
from training.calibration import expected_calibration_error, softmax
from training.crossval import FOLD_RELEASES, STRESS_FOLD, make_folds, summarise
from training.slots import SLOT_RE


@pytest.fixture(scope="module")
def folds():
    return make_folds(DATA_DIR, (*FOLD_RELEASES, STRESS_FOLD))


def test_no_text_is_both_trained_on_and_scored_in_a_fold(folds):
    assert [f.held_out for f in folds] == [*FOLD_RELEASES, STRESS_FOLD]
    for fold in folds:
        trained = {bitext.normalise_key(x.text) for x in fold.train}
        scored = {bitext.normalise_key(x.text) for x in fold.test}
        assert len(fold.test) > 1000 and len(fold.train) > 5000
        assert not trained & scored, fold.held_out
        # nor a template: the same words with another order number, amount or {{Slot}}
        templates = {bitext.template_key(x.text) for x in fold.train}
        assert not templates & {bitext.template_key(x.text) for x in fold.test}, fold.held_out
        # every intent is scored, and the scored texts come from the held-out release(s) only
        assert len({x.intent for x in fold.test}) == 27
        assert {x.source for x in fold.test} <= set(fold.held_out.split("+"))
        assert {x.source.split("-")[0] for x in fold.train} == set(fold.train_on)
        assert not any(SLOT_RE.search(x.text) for x in fold.test)  # scored as a customer writes: values filled


def test_a_template_key_ignores_values_slots_and_punctuation():
    key = bitext.template_key
    assert key("Cancel purchase 113542617735902?") == key("cancel purchase {{Order Number}}")
    assert key("refund of $12.50") == key("refund of {{Currency Symbol}}{{Refund Amount}}")
    assert key("cancel my order") != key("track my order")


def test_a_fold_cannot_hold_out_every_release():
    with pytest.raises(ValueError, match="hold out one or two"):
        make_folds(DATA_DIR, ("4k5+8k+27k",))
    with pytest.raises(ValueError):
        make_folds(DATA_DIR, ("20k",))


def _overconfident(n: int, seed: int, scale: float = 4.0, classes: int = 5):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(n, classes)) * 1.5
    gold = np.array([rng.choice(classes, p=p) for p in softmax(true)])
    return true * scale, gold


def test_each_fold_is_calibrated_on_the_other_folds_only():
    labels = [f"l{i}" for i in range(5)]
    logits, gold = {}, {}
    for i, name in enumerate(FOLD_RELEASES):
        logits[name], gold[name] = _overconfident(1500, seed=i)
    logits["27k"] = logits["27k"] / 4.0  # this fold alone is calibrated as it is
    results = {name: {"train_on": []} for name in FOLD_RELEASES}
    summary = summarise(results, logits, gold, labels)
    for name in ("4k5", "8k"):
        fold = summary["folds"][name]
        assert fold["ece"] < fold["ece_uncalibrated"] / 2
    # 27k's temperature comes from two overconfident folds, so it is far above 1 and over-corrects that fold
    assert summary["folds"]["27k"]["temperature"] > 2.5
    assert summary["folds"]["27k"]["ece"] > summary["folds"]["27k"]["ece_uncalibrated"]
    assert summary["worst_fold"]["held_out"] in FOLD_RELEASES
    assert summary["worst_fold"]["accuracy"] == min(f["accuracy"] for f in summary["folds"].values())


def test_the_stress_fold_is_reported_but_chooses_nothing():
    labels = [f"l{i}" for i in range(5)]
    logits, gold = {}, {}
    for i, name in enumerate((*FOLD_RELEASES, STRESS_FOLD)):
        logits[name], gold[name] = _overconfident(800, seed=i)
    logits[STRESS_FOLD] = np.zeros_like(logits[STRESS_FOLD])  # the worst by far
    summary = summarise({n: {} for n in logits}, logits, gold, labels)
    assert summary["worst_fold"]["held_out"] != STRESS_FOLD
    assert STRESS_FOLD in summary["folds"]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", SLOT_RE.sub(" ", text.lower()))


def _one_typo_apart(a: str, b: str) -> bool:
    """At most one swap of neighbours, dropped, doubled or substituted letter between ``a`` and ``b``."""
    if a == b:
        return True
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        )
    short, long_ = sorted((a, b), key=len)
    return len(long_) - len(short) == 1 and any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _close(word: str, others: set[str]) -> bool:
    """``word`` or a typo of it (one or two edits) is among ``others``."""
    return any(
        _one_typo_apart(word, o) or any(_one_typo_apart(word, m) and _one_typo_apart(m, o) for m in _edits(word))
        for o in others
    )


def _edits(word: str) -> set[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = {word[:i] + word[i + 1 :] for i in range(len(word))}
    out |= {word[:i] + c + word[i:] for i in range(len(word) + 1) for c in letters}
    return out


def test_augmentation_changes_how_a_customer_writes_not_what_they_want():
    rows = bitext.load_release(DATA_DIR, "4k5", slot_augment=True) + bitext.load_release(DATA_DIR, "8k")
    rng = random.Random(5)
    sample = random.Random(0).sample(rows, 600)
    changed = 0
    for item in sample:
        variant = augment(item.text, rng, Augmentation(rate=1.0))
        changed += variant != item.text
        kept = set(_words(variant))
        for word in _words(item.text):
            if word in PROTECTED:  # negations survive untouched
                assert word in kept, (item.text, variant)
        # what the customer asks for is still there: every word of 4+ letters, or a typo of it
        opener_words = {"want", "need", "would", "like", "help", "could", "please", "trying", "have"}
        for word in _words(item.text):
            if len(word) >= 4 and word not in opener_words:
                assert _close(word, kept), (word, item.text, variant)
        # placeholders that stay are written exactly as the 27K release writes them
        for slot in SLOT_RE.findall(variant):
            assert "{{" + slot + "}}" in item.text
    assert changed > 500


def test_augmentation_is_seeded_and_leaves_most_texts_alone_at_the_default_rate():
    text = "I want to cancel order 12345, can you help me?"
    a = [augment(text, random.Random(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(2)
    share = np.mean([augment(text, rng) == text for _ in range(2000)])
    assert 0.4 < share < 0.65  # rate 0.5, and a few variants come out the same


def test_fresh_order_numbers_replace_the_released_ones():
    rng = random.Random(3)
    numbers = [
        re.findall(r"\d{4,}", augment("where is order 113542617735902", rng, Augmentation(rate=1.0)))[0]
        for _ in range(100)
    ]
    assert len(set(numbers)) > 60
    assert 5 < numbers.count("113542617735902") < 35  # kept 1 - Augmentation.numbers of the time


def test_expected_calibration_error_of_the_fold_temperature_is_lower_on_a_miscalibrated_model():
    logits, gold = _overconfident(3000, seed=9)
    before = expected_calibration_error(softmax(logits), gold)
    summary = summarise(
        {"4k5": {}, "8k": {}},
        {"4k5": logits[:1500], "8k": logits[1500:]},
        {"4k5": gold[:1500], "8k": gold[1500:]},
        [f"l{i}" for i in range(5)],
    )
    assert all(f["ece"] < before / 2 for f in summary["folds"].values())
