"""A plain PyTorch fine-tuning loop: AdamW, linear warmup, dynamic padding, length-bucketed batches."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm.auto import tqdm

from training.modeling import freeze_lower_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from model.classifier import DeviceChoice


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run."""

    epochs: float = 3.0
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    seed: int = 13
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    # -1: fine-tune every weight; N >= 0: keep the embeddings and the lowest N encoder layers as pretrained
    freeze_layers: int = -1
    # share of the target mass spread over the other labels: keeps the logits of near-duplicate intents apart
    label_smoothing: float = 0.0
    # "linear": warmup then linear decay to 0; "constant": warmup then the peak rate to the end
    schedule: str = "linear"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated, unpadded."""
    ids: list[list[int]] = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return ids


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[NDArray[np.int64]]:
    """Shuffled batches of indices with similar lengths (sorted within chunks of 50 batches)."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches: list[NDArray[np.int64]] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort([lengths[i] for i in part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(ids: list[list[int]], index: Iterable[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the selected sequences to the longest of them."""
    rows = [ids[i] for i in index]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, row in enumerate(rows):
        input_ids[n, : len(row)] = torch.tensor(row)
        mask[n, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def padded_batch(rows: list[list[int]], pad_id: int, device: DeviceChoice) -> dict[str, torch.Tensor]:
    """``rows`` padded to the longest of them, on the device."""
    return {k: v.to(device.device) for k, v in collate(rows, range(len(rows)), pad_id).items()}


def optimise(
    model: torch.nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> float:
    """One step on ``loss``: backpropagate, clip the gradient norm to 1, step the optimiser and the schedule."""
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def make_optimizer(
    model: PreTrainedModel, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases/LayerNorm) with linear warmup then linear decay."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:  # frozen weights (TrainConfig.freeze_layers) are neither updated nor decayed
            (no_decay if param.ndim < 2 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    warmup = max(1, int(total_steps * config.warmup_ratio))

    if config.schedule not in ("linear", "constant"):
        raise ValueError(f"schedule is 'linear' or 'constant', not {config.schedule!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    config: TrainConfig,
    device: DeviceChoice,
    class_weights: Sequence[float] | None = None,
    desc: str = "train",
    outliers: Sequence[str] = (),
    outlier: OutlierExposure | None = None,
    augment: Callable[[str, random.Random], str] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place; returns timing and loss statistics.

    ``outliers``: texts that belong to no label (outlier exposure, see :class:`OutlierExposure`). Each step
    also scores a few of them and pulls their predicted distribution towards uniform, so that text unlike
    any class gets a low confidence instead of a confident wrong label.

    ``augment(text, rng)``: a label-preserving variant of a text, drawn afresh for every text each epoch
    (:mod:`training.augment`), so no two epochs see the same wording.
    """
    seed_everything(config.seed)
    freeze_lower_layers(model, config.freeze_layers)
    rng = np.random.default_rng(config.seed)
    ids = encode(tokenizer, texts, config.max_length)
    exposure = _Outliers(tokenizer, outliers, outlier or OutlierExposure(), config) if outliers else None
    target = torch.tensor(list(labels), dtype=torch.long)
    weight = torch.tensor(class_weights, dtype=torch.float32, device=device.device) if class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    variants = random.Random(config.seed + 2)
    steps_per_epoch = -(-len(ids) // config.batch_size)
    total = max(1, round(steps_per_epoch * config.epochs))
    optimizer, scheduler = make_optimizer(model, config, total)
    # transformers wraps PreTrainedModel.to in functools.wraps, which hides from mypy that it is a method
    model.to(device.device).train()  # type: ignore[arg-type]
    started, step, losses = time.perf_counter(), 0, []
    with tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True) as bar:
        while step < total:
            if augment is not None:
                ids = encode(tokenizer, [augment(text, variants) for text in texts], config.max_length)
            for index in bucketed_batches([len(x) for x in ids], config.batch_size, rng):
                if step >= total:
                    break
                rows = [ids[i] for i in index]
                extra = exposure.rows(max(len(r) for r in rows)) if exposure is not None else []
                batch = padded_batch(rows + extra, tokenizer.pad_token_id, device)
                with autocast_for(device.device, device.autocast_dtype):
                    logits = model(**batch).logits.float()
                loss = loss_fn(logits[: len(rows)], target[index].to(device.device))
                if exposure is not None and extra:
                    loss = loss + exposure.loss(logits[len(rows) :])
                losses.append(optimise(model, loss, optimizer, scheduler))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves PreTrainedModel.eval unannotated
    return {
        "steps": total,
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": float(np.mean(losses[-50:])),
    }


@dataclass(frozen=True)
class OutlierExposure:
    """Outlier exposure (Hendrycks et al., ICLR 2019): each step, ``batch`` outlier texts ride along in the
    labelled batch (cut to its padded width, so they cost no padding) and add ``weight`` x their
    cross-entropy to the uniform distribution to the loss."""

    weight: float = 0.5
    batch: int = 4

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Outliers:
    """Cycles through the outlier texts in a seeded order of its own (the labelled batches keep theirs)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], settings: OutlierExposure, config: TrainConfig
    ) -> None:
        self.ids = encode(tokenizer, texts, config.max_length)
        self.settings = settings
        self.rng = np.random.default_rng(config.seed + 1)
        self.order: list[int] = []

    def rows(self, width: int) -> list[list[int]]:
        """The next ``batch`` outliers, each cut to ``width`` tokens (its last token, [SEP], kept)."""
        while len(self.order) < self.settings.batch:
            self.order += self.rng.permutation(len(self.ids)).tolist()
        index, self.order = self.order[: self.settings.batch], self.order[self.settings.batch :]
        return [
            self.ids[i] if len(self.ids[i]) <= width else self.ids[i][: width - 1] + self.ids[i][-1:] for i in index
        ]

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        # cross-entropy to the uniform distribution: logsumexp(z) - mean(z), averaged over the outliers
        return self.settings.weight * (torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1)).mean()


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: DeviceChoice,
    max_length: int,
    batch_size: int = 128,
) -> NDArray[np.float32]:
    """Raw logits (float32) in input order, batched by length."""
    # transformers wraps PreTrainedModel.to in functools.wraps, which hides from mypy that it is a method
    model.to(device.device).eval()  # type: ignore[arg-type]
    num_labels = model.config.num_labels
    if num_labels is None:  # transformers' config has no labels without id2label; load_base always sets it
        raise ValueError(f"{type(model).__name__} has no id2label in its config: not a classification model")
    ids = encode(tokenizer, texts, max_length)
    out = np.empty((len(ids), num_labels), dtype=np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    with autocast_for(device.device, device.autocast_dtype):
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = {k: v.to(device.device) for k, v in collate(ids, index, tokenizer.pad_token_id).items()}
            out[index] = model(**batch).logits.float().cpu().numpy()
    return out
