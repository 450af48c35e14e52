"""The written outlier requests (data/outliers/) train the intent model: they must stay apart from what scores it."""

from __future__ import annotations


def test_the_written_outlier_requests_stay_apart_from_the_out_of_scope_evaluation_set():
    from tests.paths import DATA_DIR
    from training import data as bitext
    from training.intent import read_requests, written_out_of_scope
    from training.sentiment_data import near_duplicates

    requests = read_requests(DATA_DIR)
    evaluation = [text for text, _ in written_out_of_scope(DATA_DIR)]
    assert len(requests) >= 150
    assert near_duplicates(requests, evaluation) == []
    assert not {bitext.template_key(t) for t in requests} & {bitext.template_key(t) for t in evaluation}
    inquiries = {bitext.normalise_key(x.text) for name in ("4k5", "8k") for x in bitext.load_release(DATA_DIR, name)}
    assert [t for t in requests if bitext.normalise_key(t) in inquiries] == []
