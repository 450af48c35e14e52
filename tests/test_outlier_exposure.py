"""Outlier exposure in the training loop: what rides along in a batch and what its loss rewards."""

import math

import torch

from training.engine import OutlierExposure, TrainConfig, _Outliers


class _Tokenizer:
    """Token ids of a text: [CLS]=101, one id per word, [SEP]=102 (truncated like a real tokenizer)."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=64):
        ids = [[101, *(1000 + len(word) for word in text.split())][: max_length - 1] + [102] for text in texts]
        return {"input_ids": ids}


def test_outliers_are_cut_to_the_batch_width_keeping_their_last_token():
    texts = ["one two three four five six seven", "short one"]
    outliers = _Outliers(_Tokenizer(), texts, OutlierExposure(batch=2), TrainConfig(max_length=64))
    rows = outliers.rows(width=5)
    assert sorted(len(row) for row in rows) == [4, 5]
    for row in rows:
        assert row[0] == 101 and row[-1] == 102
    assert len(outliers.rows(width=5)) == 2  # cycles through the texts again, in a new seeded order


def test_outlier_loss_is_smallest_for_a_flat_distribution():
    outliers = _Outliers(_Tokenizer(), ["a b"], OutlierExposure(weight=0.5), TrainConfig())
    flat = outliers.loss(torch.zeros(3, 27))
    assert math.isclose(flat.item(), 0.5 * math.log(27), rel_tol=1e-6)  # 0.5 x cross-entropy to uniform
    confident = torch.zeros(3, 27)
    confident[:, 4] = 8.0
    assert outliers.loss(confident).item() > flat.item() + 1.0


def test_outlier_loss_pulls_a_confident_prediction_towards_flat():
    outliers = _Outliers(_Tokenizer(), ["a b"], OutlierExposure(), TrainConfig())
    logits = torch.zeros(1, 5)
    logits[0, 2] = 4.0
    logits.requires_grad_(True)
    outliers.loss(logits).backward()
    assert logits.grad[0, 2] > 0 and (logits.grad[0, [0, 1, 3, 4]] < 0).all()  # descent lowers the top logit
