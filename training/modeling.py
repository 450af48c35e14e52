"""Loading a base model with a classification head, and picking the device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from training.errors import TrainingError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from model.classifier import DeviceChoice


def load_base(base_model: str, labels: Sequence[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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


class FreezeError(TrainingError, ValueError):
    """``freeze_layers`` does not fit the base model."""


def encoder_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The stacked transformer blocks of a BERT-like or DistilBERT model, lowest first."""
    base = model.base_model
    for path in (("encoder", "layer"), ("transformer", "layer")):
        blocks: Any = base  # looked up by attribute name: each architecture names its blocks differently
        for name in path:
            blocks = getattr(blocks, name, None)
        if blocks is not None:
            return list(blocks)
    raise FreezeError(f"cannot find the encoder layers of {type(base).__name__} to freeze: use --freeze-layers -1")


def freeze_lower_layers(model: PreTrainedModel, layers: int) -> int:
    """Keep the embeddings and the lowest ``layers`` encoder layers at their pretrained weights (-1: none).

    Measured training on one Bitext release and scoring the other (training/README.md): the lower layers
    already place synonyms near each other ("refund", "reimbursement", "rebate"); fine-tuning them on one
    release's wording teaches the model to rely on that wording. Returns how many parameters were frozen.
    """
    if layers < -1:
        raise FreezeError(f"freeze_layers is -1 (fine-tune everything) or N >= 0, not {layers}")
    if layers == -1:
        return 0
    embeddings = getattr(model.base_model, "embeddings", None)
    if embeddings is None:
        raise FreezeError(
            f"cannot find the embeddings of {type(model.base_model).__name__} to freeze: use --freeze-layers -1"
        )
    blocks = encoder_layers(model)
    if layers >= len(blocks):
        raise FreezeError(
            f"--freeze-layers {layers} would freeze all {len(blocks)} encoder layers of the base "
            f"model: at most {len(blocks) - 1}, or -1 to fine-tune everything"
        )
    frozen: list[torch.nn.Parameter] = [*embeddings.parameters()]
    for block in blocks[:layers]:
        frozen += block.parameters()
    for param in frozen:
        param.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def pick_device() -> DeviceChoice:
    """CUDA if present, else CPU with bf16 autocast where the CPU has bf16 instructions (the runtime's own rule)."""
    from model.classifier import choose_device

    return choose_device("auto")
