"""The written outlier requests (data/outliers/) train the intent model: they must stay apart from what scores it."""

from __future__ import annotations

import shutil


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


def test_a_recipe_records_only_the_outliers_its_data_directory_can_give(tmp_path):
    """crossval and train decide it in one place, so both record the recipe they ran and the temperature
    of the folds still reaches a model trained on every release."""
    from tests.paths import DATA_DIR
    from training.intent import OUTLIER_REQUESTS, default_recipe

    recipe = default_recipe()
    assert recipe.for_data(DATA_DIR) == (recipe, [])
    texts, files = recipe.outliers(DATA_DIR)
    assert any(f.path.endswith(OUTLIER_REQUESTS) for f in files)

    for name in ("goemotions", "sst5"):  # the sentences, without the requests file
        shutil.copytree(DATA_DIR / name, tmp_path / name)
    reduced, notes = recipe.for_data(tmp_path)
    assert reduced.outlier_exposure and not reduced.request_outliers
    assert reduced.as_dict()["request_outliers"] is False and reduced.as_dict()["request_repeats"] == 0
    assert len(notes) == 1 and OUTLIER_REQUESTS in notes[0]
    fewer, fewer_files = reduced.outliers(tmp_path)
    assert fewer == texts[: len(fewer)] and len(fewer) < len(texts)
    assert not any(f.path.endswith(OUTLIER_REQUESTS) for f in fewer_files)

    own, _ = recipe.for_data(DATA_DIR, own_taxonomy=True)  # another team's intents may be such requests
    assert own.outlier_exposure and not own.request_outliers
