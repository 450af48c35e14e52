"""Sentiment label mapping and the training mix."""

from collections import Counter

from training import sentiment_data as sd
from training.paths import DATA_DIR

POLARITY = {"joy": "positive", "gratitude": "positive", "anger": "negative", "annoyance": "negative",
            "confusion": "ambiguous", "curiosity": "ambiguous"}


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
    tweets = sd.load_tweeteval(DATA_DIR, "val")
    assert len(tweets) == 2000
    assert sum(t.text.lower() in train_texts for t in tweets) < 5


def _words(text: str) -> frozenset[str]:
    return frozenset("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_written_messages_stay_apart_from_the_customer_service_evaluation_sets():
    """The written training messages share no message, nor 70% of a message's words, with the probe or holdout."""
    written = sd.load_written(DATA_DIR)
    assert Counter(r.label for r in written) == {"negative": 600, "neutral": 386, "positive": 242}
    evaluation = [*sd.load_holdout(DATA_DIR), *sd.load_probe(DATA_DIR)]
    assert Counter(r.label for r in sd.load_holdout(DATA_DIR)) == {"negative": 140, "neutral": 95, "positive": 65}
    held = [_words(r.text) for r in evaluation]
    close = [r.text for r in written
             if any(len(_words(r.text) & h) >= 0.7 * len(_words(r.text) | h) for h in held)]
    assert close == []
    assert {r.source for r in sd.build_mix(DATA_DIR)} >= {"cs-written"}


def test_stratified_holdout_is_disjoint_seeded_and_per_group():
    from training.data import stratified_holdout

    rows = [sd.Labeled(f"text {source} {label} {i}", label, source)
            for source, label, n in (("a", "negative", 50), ("a", "neutral", 30), ("b", "positive", 3)) for i in range(n)]
    key = lambda r: (r.source, r.label)  # noqa: E731
    kept, held = stratified_holdout(rows, 0.1, seed=3, key=key)
    assert (kept, held) == stratified_holdout(rows, 0.1, seed=3, key=key)
    assert not {r.text for r in kept} & {r.text for r in held}
    assert len(kept) + len(held) == len(rows)
    assert Counter(key(r) for r in held) == {("a", "negative"): 5, ("a", "neutral"): 3, ("b", "positive"): 1}
    assert held != stratified_holdout(rows, 0.1, seed=4, key=key)[1]
