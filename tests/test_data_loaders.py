"""Loaders on the vendored data: counts, unified categories, no duplicates, seeded slot filling."""

import random
from pathlib import Path

import pytest

from tests.paths import DATA_DIR
from training import data as bitext
from training.slots import fill_slots, has_slots, slot_entity

CATEGORIES = {
    "ACCOUNT",
    "CANCELLATION_FEE",
    "CONTACT",
    "DELIVERY",
    "FEEDBACK",
    "INVOICE",
    "ORDER",
    "PAYMENT",
    "REFUND",
    "SHIPPING_ADDRESS",
    "SUBSCRIPTION",
}


@pytest.fixture(scope="module")
def releases():
    return {name: bitext.load_release(DATA_DIR, name) for name in bitext.RELEASES}


def test_counts_and_intents(releases):
    assert 4400 <= len(releases["4k5"]) <= 4514
    assert 8100 <= len(releases["8k"]) <= 8175
    for items in releases.values():
        assert len({x.intent for x in items}) == 27


def test_categories_unified(releases):
    for items in releases.values():
        cats = set(bitext.category_map(items).values())
        assert cats == CATEGORIES
    assert bitext.category_map(releases["8k"])["newsletter_subscription"] == "SUBSCRIPTION"


def test_no_duplicates_and_no_bom(releases):
    for items in releases.values():
        keys = [bitext.normalise_key(x.text) for x in items]
        assert len(keys) == len(set(keys))
        assert all(not x.text.startswith("\ufeff") for x in items)


def test_without_texts_removes_overlap(releases):
    held = bitext.without_texts(releases["4k5"], releases["8k"])
    train_keys = {bitext.normalise_key(x.text) for x in releases["8k"]}
    assert len(held) < len(releases["4k5"])
    assert not any(bitext.normalise_key(x.text) in train_keys for x in held)


def test_slot_augment_adds_placeholders():
    items = bitext.load_release(DATA_DIR, "4k5", slot_augment=True)
    slotted = [x for x in items if x.source == "4k5-slots"]
    assert len(slotted) > 1000
    assert all(has_slots(x.text) for x in slotted)
    assert "{{Order Number}}" in slot_entity("check ETA of order 732201349959", "order_id", 19, 31)


def test_slot_filling_is_seeded():
    text = "where is {{Order Number}}? I paid {{Refund Amount}} from {{Delivery City}}"
    first = fill_slots(text, random.Random(3))
    assert first == fill_slots(text, random.Random(3))
    assert not has_slots(first)


def test_27k_format(tmp_path: Path):
    path = tmp_path / "27k.csv"
    path.write_text(
        "flags,instruction,category,intent,response\n"
        "B,cancel order {{Order Number}},ORDER,cancel_order,ok\n"
        "B,newsletter please,SUBSCRIPTION,newsletter_subscription,ok\n"
        "B,fee?,CANCEL,check_cancellation_fee,ok\n",
        encoding="utf-8",
    )
    filled = bitext.load_bitext(path, seed=1)
    assert filled == bitext.load_bitext(path, seed=1)
    assert not has_slots(filled[0].text) and filled[0].text.startswith("cancel order ")
    assert bitext.load_bitext_27k(path, fill=False)[0].text == "cancel order {{Order Number}}"
    assert [x.category for x in filled] == ["ORDER", "SUBSCRIPTION", "CANCELLATION_FEE"]


def test_27k_sample_loads_as_the_third_release(releases):
    """data/bitext27k's sample of the 27K release: same 27 intents and categories, slots as released."""
    rows = bitext.load_bitext_27k(DATA_DIR / bitext.BITEXT_27K_SAMPLE, fill=False)
    assert len(rows) >= 2300
    assert bitext.category_map(rows) == bitext.category_map(releases["4k5"])
    assert sum(has_slots(x.text) for x in rows) > 400
    from training.crossval import FOLD_RELEASES

    assert "27k" in FOLD_RELEASES
