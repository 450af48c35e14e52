"""The joint-encoder experiment (training/joint_encoder.py): both heads learn, and no held-out text leaks."""

from __future__ import annotations

import random

import numpy as np
import torch

from training import data as bitext
from training import sentiment_data as sd


def test_held_out_inquiries_and_their_templates_leave_the_sentiment_rows():
    from training.joint_encoder import unseen_by

    rows = [
        sd.Labeled("Where is order 12345?", "neutral", "bitext-8k"),
        sd.Labeled("where is order 99", "neutral", "bitext-8k"),  # same template, another number
        sd.Labeled("I love this shop", "positive", "goemotions-train"),
    ]
    test = [bitext.Inquiry("where is order 777", "track_order", "ORDER")]
    assert [r.text for r in unseen_by(rows, test)] == ["I love this shop"]


def test_one_encoder_learns_both_tasks(tiny_model_dir):
    from model.artifacts import SENTIMENT_LABELS, read_manifest
    from model.classifier import choose_device
    from tests.tiny import INTENTS, make_text
    from training.engine import TrainConfig, predict_logits
    from training.intent import IntentRecipe
    from training.joint_encoder import JointModel, SentimentData, TaskView, score_sentiment, train_joint
    from training.modeling import load_base

    labels = read_manifest(tiny_model_dir / "intent").labels
    intent_model, tokenizer = load_base(str(tiny_model_dir / "intent"), labels)
    torch.manual_seed(0)
    joint = JointModel(intent_model, len(SENTIMENT_LABELS))
    rng = random.Random(3)
    (intent, (_, keyword)) = next(iter(INTENTS.items()))
    moods = [rng.choice(SENTIMENT_LABELS) for _ in range(64)]
    texts = [make_text(rng, keyword, mood) for mood in moods]
    gold = np.array([SENTIMENT_LABELS.index(m) for m in moods])
    device = choose_device("cpu", bf16=False)
    view = TaskView(joint, "sentiment", len(SENTIMENT_LABELS))
    before = (predict_logits(view, tokenizer, texts, device, 32).argmax(1) == gold).mean()
    recipe = IntentRecipe(TrainConfig(epochs=20, lr=3e-3, batch_size=16, max_length=32))
    intents = (texts, [labels.index(intent)] * len(texts))
    stats = train_joint(joint, tokenizer, intents, (texts, gold.tolist()), recipe, device, [], [1.0] * 3, "test")
    assert stats["steps"] == 20 * (4 + 4)  # every batch of both tasks, every epoch
    after = (predict_logits(view, tokenizer, texts, device, 32).argmax(1) == gold).mean()
    assert after >= before + 0.2
    scores = predict_logits(TaskView(joint, "intent", len(labels)), tokenizer, texts, device, 32)
    assert scores.shape == (len(texts), len(labels))
    assert (scores.argmax(1) == labels.index(intent)).all()  # the intent head kept its task
    rows = [sd.Labeled(t, m, "tiny") for t, m in zip(texts, moods)]
    scored = score_sentiment(view, tokenizer, device, SentimentData([], rows[:32], {"tiny": rows}))
    assert scored["tiny"]["n"] == 64 and scored["tiny"]["accuracy"] == round(after, 4)  # a temperature keeps the argmax
