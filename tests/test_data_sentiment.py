"""Sentiment label mapping and the training mix."""

from collections import Counter

import pytest

from tests.paths import DATA_DIR
from training import sentiment_data as sd

POLARITY = {
    "joy": "positive",
    "gratitude": "positive",
    "anger": "negative",
    "annoyance": "negative",
    "confusion": "ambiguous",
    "curiosity": "ambiguous",
}


def test_goemotions_mapping():
    assert sd.goemotions_sentiment(["gratitude"], POLARITY) == "positive"
    assert sd.goemotions_sentiment(["anger", "confusion"], POLARITY) == "negative"
    assert sd.goemotions_sentiment(["neutral"], POLARITY) == "neutral"
    assert sd.goemotions_sentiment(["joy", "anger"], POLARITY) is None
    assert sd.goemotions_sentiment(["curiosity"], POLARITY) is None
    assert sd.goemotions_sentiment(["joy", "neutral"], POLARITY) == "positive"


def test_sst5_mapping():
    assert [sd.sst5_sentiment(i) for i in range(5)] == ["negative", "negative", None, "positive", "positive"]
    assert sd.sst5_sentiment(2, keep_neutral=True) == "neutral"


def test_bitext_sentiment_rules():
    assert sd.bitext_sentiment("how do I change my address?", "change_shipping_address") == "neutral"
    assert sd.bitext_sentiment("I can't track my order", "track_order") == "negative"
    assert sd.bitext_sentiment("file a claim", "complaint") == "negative"
    assert sd.bitext_sentiment("talk to a damn agent", "contact_human_agent", "BW") == "negative"


def test_detokenize():
    assert sd.detokenize("it does n 't work , sadly .") == "it doesn't work, sadly."
    assert sd.detokenize("i do n't like it 's color") == "i don't like it's color"


def test_mix_is_seeded_and_capped():
    first = sd.build_mix(DATA_DIR, seed=5)
    assert first == sd.build_mix(DATA_DIR, seed=5)
    counts = Counter((r.source, r.label) for r in first)
    for part in sd.DEFAULT_MIX:
        if part.cap is not None:
            assert counts[part.source, part.label] <= part.cap
    assert set(Counter(r.label for r in first)) == {"negative", "neutral", "positive"}


def test_validation_sources_not_trained_on():
    train_texts = {r.text.lower() for r in sd.build_mix(DATA_DIR)}
    trained, held = sd.split_tweeteval_val(DATA_DIR)
    assert (len(trained), len(held)) == (1500, 500)
    assert sum(t.text.lower() in train_texts for t in trained) > 1400  # the mix does train on this part
    assert sum(t.text.lower() in train_texts for t in held) < 3  # near-identical tweets aside
    for name in ("tweeteval-test", "goemotions-test", "cs-holdout", "probe"):
        rows = sd.VALIDATION_SOURCES[name][0](DATA_DIR)
        assert sum(r.text.lower() in train_texts for r in rows) < 0.01 * len(rows) + 5, name


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("my package never arrvied", "my package never arrived"),  # a typo
        (
            "the seat I paid extra for was given to someone else",
            "Hi there, the seat I paid extra for was given to someone else on my flight today.",
        ),  # a wrapper
        ("Do you price match?", "do you price match"),  # case and punctuation
        ("great experience from start to finish", "excellent experience from start to finish"),  # one word
    ],
)
def test_near_duplicate_catches_copies(a, b):
    assert sd.near_duplicate(a, b) and sd.near_duplicate(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("my package never arrived", "my refund never arrived and nobody answers"),
        ("how do I change my address?", "how do I reset my password?"),
        ("🙏", "👍"),
    ],
)
def test_near_duplicate_keeps_different_messages(a, b):
    assert not sd.near_duplicate(a, b)


def test_written_messages_stay_apart_from_the_customer_service_evaluation_sets():
    """No message of the training mix is a near duplicate of a holdout or probe message, and those two are apart."""
    holdout, probe = sd.load_holdout(DATA_DIR), sd.load_probe(DATA_DIR)
    assert sd.near_duplicates([h.text for h in holdout], [p.text for p in probe]) == []
    mix = sd.build_mix(DATA_DIR)
    written = [r for r in mix if r.source == "cs-written"]
    evaluation = [e.text for e in sd.evaluation_messages(DATA_DIR)]
    assert sd.near_duplicates([r.text for r in written], evaluation) == []
    assert {r.text for r in mix}.isdisjoint(evaluation)
    raw = (DATA_DIR / "written" / "customer_service_messages.csv").read_text(encoding="utf-8")
    assert "my package never arrvied" in raw  # the file keeps the writer's rows; the loader drops the copies
    assert Counter(r.label for r in written) == {"negative": 595, "neutral": 381, "positive": 242}
    assert Counter(r.label for r in holdout) == {"negative": 139, "neutral": 92, "positive": 64}


def test_stratified_holdout_is_disjoint_seeded_and_per_group():
    from training.data import stratified_holdout

    rows = [
        sd.Labeled(f"text {source} {label} {i}", label, source)
        for source, label, n in (("a", "negative", 50), ("a", "neutral", 30), ("b", "positive", 3))
        for i in range(n)
    ]
    key = lambda r: (r.source, r.label)  # noqa: E731
    kept, held = stratified_holdout(rows, 0.1, seed=3, key=key)
    assert (kept, held) == stratified_holdout(rows, 0.1, seed=3, key=key)
    assert not {r.text for r in kept} & {r.text for r in held}
    assert len(kept) + len(held) == len(rows)
    assert Counter(key(r) for r in held) == {("a", "negative"): 5, ("a", "neutral"): 3, ("b", "positive"): 1}
    assert held != stratified_holdout(rows, 0.1, seed=4, key=key)[1]


def test_the_emoji_holdout_adds_one_emoji_that_fits_each_label():
    from tests.paths import DATA_DIR
    from training import sentiment_data as sd

    rows = sd.load_holdout(DATA_DIR)
    emoji_rows = sd.VALIDATION_SOURCES["cs-holdout-emoji"][0](DATA_DIR)
    assert emoji_rows == sd.with_fitting_emoji(rows)  # seeded: the same set every time
    assert [r.label for r in emoji_rows] == [r.label for r in rows]
    for row, plain in zip(emoji_rows, rows):
        head, _, added = row.text.rpartition(" ")
        assert head == plain.text and added in sd.FITTING_EMOJI[row.label]
    assert len({r.text.rpartition(" ")[2] for r in emoji_rows}) > 10
