"""Text steps (model/text.py): what an artifact's text goes through before its tokenizer, in training and service."""

from __future__ import annotations

import json
import shutil

import pytest


def test_emoji_become_their_names_and_other_text_is_left_alone():
    from model.text import emoji_words, prepare

    assert emoji_words("where is my order 😡").split() == ["where", "is", "my", "order", "enraged", "face"]
    assert emoji_words("great 👍🏽 thanks").split() == ["great", "thumbs", "up", "medium", "skin", "tone", "thanks"]
    assert emoji_words("😡😡").split() == ["enraged", "face", "enraged", "face"]
    for plain in ("reset my_password now", "café crème, naïve façade", "order #123 :) ;-)", ""):
        assert emoji_words(plain) == plain
    assert prepare(["a 😭", "b"], []) == ["a 😭", "b"]
    assert prepare(["a 😭", "b"], ["emoji_words"]) == [emoji_words("a 😭"), "b"]


def test_an_unknown_text_step_makes_the_artifact_unreadable(tiny_model_dir, tmp_path):
    from model.artifacts import MANIFEST_NAME, read_manifest
    from model.errors import ArtifactError

    copy = shutil.copytree(tiny_model_dir / "sentiment", tmp_path / "sentiment")
    data = json.loads((copy / MANIFEST_NAME).read_text())
    (copy / MANIFEST_NAME).write_text(json.dumps(data | {"text_steps": ["translate"]}))
    with pytest.raises(ArtifactError):
        read_manifest(copy)


def test_the_service_reads_each_model_with_its_own_steps_and_tokenizes_the_rest_once(tiny_model_dir, tmp_path):
    import numpy as np

    from model import TextClassifier, TriageModel
    from model.artifacts import read_manifest, write_manifest
    from model.text import prepare

    root = shutil.copytree(tiny_model_dir, tmp_path / "artifacts")
    manifest = read_manifest(root / "sentiment")
    write_manifest(root / "sentiment", manifest.model_copy(update={"text_steps": ["emoji_words"]}))
    model = TriageModel.load(root)
    assert model.sentiment.text_steps == ["emoji_words"] and model.intent.text_steps == []
    assert model.shared_tokenizer  # the same tokenizer: the steps decide which texts need their own ids

    texts = ["i want my refund 😡", "track my order please", "thanks 👍 great"]
    intent_ids = model.intent.encode(texts)
    ids = model.sentiment.encode_like(texts, model.intent, intent_ids)
    expected = model.sentiment.tokenizer(prepare(texts, ["emoji_words"]), truncation=True, max_length=32)["input_ids"]
    assert ids == expected == model.sentiment.encode(texts)
    assert ids[0] != intent_ids[0] and ids[1] is intent_ids[1] and ids[2] != intent_ids[2]
    plain = ["track my order please", "refund please"]
    plain_ids = model.intent.encode(plain)
    assert model.sentiment.encode_like(plain, model.intent, plain_ids) is plain_ids  # nothing tokenized twice

    # the service's predictions are the sentiment artifact's own, read with its steps
    alone = TextClassifier.load(root / "sentiment").predict_proba(texts)
    served = np.array([[p.sentiment.scores[label] for label in model.sentiment.labels] for p in model.predict(texts)])
    np.testing.assert_allclose(served, alone, atol=1e-5)
    stepped, unstepped = TextClassifier.load(root / "sentiment"), TextClassifier.load(tiny_model_dir / "sentiment")
    one = [(stepped.predict_proba([t])[0], unstepped.predict_proba([t])[0]) for t in texts]  # one text: no padding
    assert not np.array_equal(*one[0]) and np.array_equal(*one[1])  # the step changed what the model read
