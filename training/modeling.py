"""Loading a base model with a classification head, and picking the device."""

from __future__ import annotations

from collections.abc import Sequence


def load_base(base_model: str, labels: Sequence[str]):
    """(model, tokenizer) from a hub id or local directory, with id2label/label2id set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label = dict(enumerate(labels))
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=len(labels),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )
    return model, tokenizer


def pick_device():
    """CUDA if present, else CPU with bf16 autocast where AVX-512/AMX allow (the runtime's own rule)."""
    from model.classifier import choose_device

    return choose_device("auto")
