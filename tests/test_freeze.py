"""TrainConfig.freeze_layers: the embeddings and the lowest N encoder layers keep their pretrained weights."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from tests.tiny import INTENTS, make_tokenizer, vocabulary
from training.engine import TrainConfig, train
from training.modeling import FreezeError, freeze_lower_layers


def _bert(layers: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(INTENTS),
    )
    return BertForSequenceClassification(config)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


def test_training_leaves_the_frozen_layers_as_they_were():
    model = _bert(layers=3)
    before = _snapshot(model)
    keywords = [keyword for _, keyword in INTENTS.values()]
    texts = [f"i want my {keyword} with the order" for keyword in keywords] * 4
    labels = list(range(len(keywords))) * 4
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=8, max_length=16, seed=1, freeze_layers=2)
    train(model, make_tokenizer(), texts, labels, config, _cpu())
    changed = _changed(before, model)
    frozen = [
        n
        for n in before
        if n.startswith("bert.embeddings.") or n.startswith(("bert.encoder.layer.0.", "bert.encoder.layer.1."))
    ]
    assert frozen and not changed & set(frozen)
    # the layer above them, the pooler and the head did learn
    assert any(n.startswith("bert.encoder.layer.2.") for n in changed)
    assert {"classifier.weight", "classifier.bias"} <= changed


def test_minus_one_fine_tunes_everything():
    model = _bert(layers=2)
    assert freeze_lower_layers(model, -1) == 0
    assert all(p.requires_grad for p in model.parameters())


def test_freezing_counts_and_limits():
    model = _bert(layers=3)
    frozen = freeze_lower_layers(model, 0)  # the embeddings only
    assert frozen == sum(p.numel() for p in model.bert.embeddings.parameters())
    assert all(p.requires_grad for p in model.bert.encoder.parameters())
    with pytest.raises(FreezeError, match="all 3 encoder layers"):
        freeze_lower_layers(_bert(layers=3), 3)
    with pytest.raises(FreezeError, match="not -2"):
        freeze_lower_layers(_bert(layers=3), -2)


def test_distilbert_layers_are_found():
    config = DistilBertConfig(
        vocab_size=len(vocabulary()),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = DistilBertForSequenceClassification(config)
    freeze_lower_layers(model, 1)
    assert not any(p.requires_grad for p in model.distilbert.embeddings.parameters())
    assert not any(p.requires_grad for p in model.distilbert.transformer.layer[0].parameters())
    assert all(p.requires_grad for p in model.distilbert.transformer.layer[1].parameters())


def _cpu():
    from model.classifier import choose_device

    return choose_device("cpu")
