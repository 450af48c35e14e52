"""Can one encoder pass serve both answers? One encoder, an intent head and a sentiment head, trained together.

``python -m training.joint_encoder [--hold-out 4k5 8k 27k]`` runs the intent cross-validation
(:mod:`training.crossval`) with a joint model in place of the intent model: on each fold, one MiniLM encoder
learns the fold's intents (the shipped intent recipe: augmentation, label smoothing, outlier exposure) and
the sentiment training mix (its class weights, less the 10% it holds out for the temperature) at once. The
two tasks' batches are shuffled together, each step one task's batch, one optimiser, so the encoder sees
exactly the texts the two separate models see, for the same number of steps.

Scored like the separate models: intent on the held-out release (``reports/crossval`` holds the separate
model's folds, same recipe), sentiment on the validation sources the sentiment artifact is scored on (beside
a separate sentiment model trained here on the same rows, same seed and device). A sentiment row whose text
(or template) the held-out release also has is dropped, so the fold's score stays unseen. Writes
``reports/joint-encoder/``: the crossval summary of the joint folds and ``joint-encoder.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.artifacts import SENTIMENT_LABELS
from training import data as bitext
from training import sentiment_data as sd
from training.augment import augment
from training.calibration import fit_temperature, softmax
from training.crossval import FOLD_RELEASES, Fold, run_crossval
from training.engine import (
    OutlierExposure,
    _Outliers,
    autocast_for,
    bucketed_batches,
    encode,
    make_optimizer,
    optimise,
    padded_batch,
    seed_everything,
)
from training.metrics import classification_metrics, summary
from training.modeling import load_base, pick_device
from training.paths import data_dir as default_data_dir
from training.paths import default_base_model, reports_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from model.classifier import DeviceChoice
    from training.intent import IntentRecipe

SENTIMENT = list(SENTIMENT_LABELS)
#: the sentiment artifact's validation sources, scored for both models
SENTIMENT_SCORED = ("cs-holdout", "tweeteval-val-holdout", "tweeteval-test", "goemotions-test", "probe")


class JointModel(torch.nn.Module):
    """The intent classifier (a BERT encoder, its pooler and head) plus a sentiment head on the same pooled output."""

    def __init__(self, intent: PreTrainedModel, sentiment_labels: int) -> None:
        super().__init__()
        self.intent = intent
        self.sentiment = torch.nn.Linear(intent.config.hidden_size, sentiment_labels)

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.intent.base_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        # BertForSequenceClassification's own dropout and head; transformers types them loosely
        dropout: torch.nn.Module = self.intent.dropout  # type: ignore[assignment]
        head: torch.nn.Module = self.intent.classifier if task == "intent" else self.sentiment  # type: ignore[assignment]
        logits: torch.Tensor = head(dropout(pooled))
        return logits


class TaskView(torch.nn.Module):
    """One head of a :class:`JointModel`, shaped like a transformers classifier for :func:`predict_logits`."""

    def __init__(self, joint: JointModel, task: str, labels: int) -> None:
        super().__init__()
        self.joint, self.task = joint, task
        self.config = SimpleNamespace(num_labels=labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.joint(self.task, input_ids, attention_mask))


@dataclass
class SentimentData:
    train: list[sd.Labeled]
    held: list[sd.Labeled]  # the mix's calibration share: fits the temperature
    sources: dict[str, list[sd.Labeled]]


def sentiment_data(data_dir: Path, seed: int) -> SentimentData:
    """The sentiment artifact's rows: the mix less its calibration share, and the validation sources."""
    rows, held = sd.split_mix(data_dir, sd.DEFAULT_MIX, seed)
    return SentimentData(rows, held, {name: sd.VALIDATION_SOURCES[name][0](data_dir) for name in SENTIMENT_SCORED})


def unseen_by(rows: list[sd.Labeled], test: list[bitext.Inquiry]) -> list[sd.Labeled]:
    """``rows`` less those whose text or template the held-out inquiries have."""
    keys = {bitext.template_key(x.text) for x in test} | {bitext.normalise_key(x.text) for x in test}
    return [r for r in rows if bitext.template_key(r.text) not in keys and bitext.normalise_key(r.text) not in keys]


def train_joint(
    model: JointModel,
    tokenizer: PreTrainedTokenizerBase,
    intents: tuple[list[str], list[int]],
    sentiments: tuple[list[str], list[int]],
    recipe: IntentRecipe,
    device: DeviceChoice,
    outliers: list[str],
    sentiment_weights: list[float],
    desc: str,
) -> dict[str, Any]:
    """Both tasks' batches shuffled together for ``recipe.config.epochs`` passes over both; see the module doc."""
    import time

    config = recipe.config
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    variants = random.Random(config.seed + 2)
    exposure = _Outliers(tokenizer, outliers, OutlierExposure(), config) if outliers else None
    losses = {
        "intent": torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        "sentiment": torch.nn.CrossEntropyLoss(weight=torch.tensor(sentiment_weights, device=device.device)),
    }
    targets = {"intent": torch.tensor(intents[1]), "sentiment": torch.tensor(sentiments[1])}
    sentiment_ids = encode(tokenizer, sentiments[0], config.max_length)
    per_epoch = -(-len(intents[0]) // config.batch_size) + -(-len(sentiment_ids) // config.batch_size)
    total = max(1, round(per_epoch * config.epochs))
    optimizer, scheduler = make_optimizer(model, config, total)  # type: ignore[arg-type]
    model.to(device.device).train()
    started, step, seen = time.perf_counter(), 0, {"intent": [0.0], "sentiment": [0.0]}
    with tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True) as bar:
        while step < total:
            texts = intents[0]
            if recipe.augmentation is not None:
                texts = [augment(t, variants, recipe.augmentation) for t in texts]
            ids = {"intent": encode(tokenizer, texts, config.max_length), "sentiment": sentiment_ids}
            batches = [
                (task, index)
                for task in ("intent", "sentiment")
                for index in bucketed_batches([len(x) for x in ids[task]], config.batch_size, rng)
            ]
            for k in rng.permutation(len(batches)):
                if step >= total:
                    break
                task, index = batches[k]
                rows = [ids[task][i] for i in index]
                extra = exposure.rows(max(len(r) for r in rows)) if exposure is not None and task == "intent" else []
                batch = padded_batch(rows + extra, tokenizer.pad_token_id, device)
                with autocast_for(device.device, device.autocast_dtype):
                    logits = model(task, batch["input_ids"], batch["attention_mask"]).float()
                loss = losses[task](logits[: len(rows)], targets[task][index].to(device.device))
                if exposure is not None and extra:
                    loss = loss + exposure.loss(logits[len(rows) :])
                seen[task].append(optimise(model, loss, optimizer, scheduler))
                step += 1
                bar.update(1)
    model.eval()
    return {
        "steps": total,
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": {task: float(np.mean(v[-50:])) for task, v in seen.items()},
    }


def score_sentiment(
    view: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, device: DeviceChoice, data: SentimentData
) -> dict[str, Any]:
    """Accuracy and recalls on each source at the temperature fitted on the mix's held-out share (as shipped)."""
    from training.sentiment import SENTIMENT_DEFAULTS, score_sources

    scored = score_sources(
        view,  # type: ignore[arg-type]  # a TaskView answers as a transformers classifier does
        tokenizer,
        device,
        {sd.CALIBRATION_SET: data.held} | data.sources,
        SENTIMENT_DEFAULTS.max_length,
    )
    temperature = fit_temperature(*scored.pop(sd.CALIBRATION_SET))
    out: dict[str, Any] = {"temperature": round(temperature, 4)}
    for name, (z, gold) in scored.items():
        out[name] = summary(classification_metrics(softmax(z, temperature), gold, SENTIMENT), SENTIMENT)
    return out


def separate_sentiment(base_model: str, data: SentimentData, seed: int) -> dict[str, Any]:
    """The two-model way, for the same comparison: the sentiment recipe alone on the same rows, with the joint
    run's seed (the sentiment recipe's own seed would shuffle the rows in another order)."""
    from training.engine import train
    from training.sentiment import SENTIMENT_CLASS_WEIGHTS, SENTIMENT_DEFAULTS

    seed_everything(seed)
    model, tokenizer = load_base(base_model, SENTIMENT)
    device = pick_device()
    stats = train(
        model,
        tokenizer,
        [r.text for r in data.train],
        [SENTIMENT.index(r.label) for r in data.train],
        replace(SENTIMENT_DEFAULTS, seed=seed),
        device,
        class_weights=list(SENTIMENT_CLASS_WEIGHTS),
        desc="separate sentiment",
    )
    return score_sentiment(model, tokenizer, device, data) | {"training": stats}


def main(argv: list[str] | None = None) -> int:
    from training.crossval import markdown
    from training.intent import default_recipe, out_of_scope_sets
    from training.sentiment import SENTIMENT_CLASS_WEIGHTS, SENTIMENT_DEFAULTS

    parser = argparse.ArgumentParser(prog="python -m training.joint_encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold-out", nargs="+", default=list(FOLD_RELEASES), choices=FOLD_RELEASES)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--out", type=Path, default=reports_dir() / "joint-encoder")
    parser.add_argument("--no-separate", action="store_true", help="skip the separate sentiment model")
    args = parser.parse_args(argv)
    base_model = args.base_model or default_base_model()
    recipe, notes = default_recipe().for_data(args.data_dir)
    for note in notes:
        print(f"joint: {note}")
    if recipe.config.lr != SENTIMENT_DEFAULTS.lr or recipe.config.batch_size != SENTIMENT_DEFAULTS.batch_size:
        print("joint: the intent and sentiment recipes differ in rate or batch: the joint run uses the intent's")
    data = sentiment_data(args.data_dir, recipe.config.seed)
    outliers = recipe.outliers(args.data_dir)[0]
    sentiment_scores: dict[str, Any] = {}

    def fit(fold: Fold, labels: list[str]) -> tuple[Any, Any, Any, dict[str, Any]]:
        label_id = {label: i for i, label in enumerate(labels)}
        train_rows = unseen_by(data.train, fold.test)
        seed_everything(recipe.config.seed)
        intent_model, tokenizer = load_base(base_model, labels)
        model = JointModel(intent_model, len(SENTIMENT))
        device = pick_device()
        stats = train_joint(
            model,
            tokenizer,
            ([x.text for x in fold.train], [label_id[x.intent] for x in fold.train]),
            ([r.text for r in train_rows], [SENTIMENT.index(r.label) for r in train_rows]),
            recipe,
            device,
            outliers,
            list(SENTIMENT_CLASS_WEIGHTS),
            desc=f"joint fold {fold.held_out}",
        )
        stats["sentiment_rows"] = len(train_rows)
        dropped = Counter(r.source for r in data.train) - Counter(r.source for r in train_rows)
        stats["sentiment_rows_dropped"] = dict(dropped)
        sentiment_scores[fold.held_out] = score_sentiment(
            TaskView(model, "sentiment", len(SENTIMENT)), tokenizer, device, data
        ) | {"training": stats}
        return TaskView(model, "intent", len(labels)), tokenizer, device, stats

    out_dir = Path(args.out)
    intent_summary = run_crossval(
        args.data_dir,
        base_model,
        recipe,
        held_out=tuple(args.hold_out),
        out_dir=out_dir,
        out_of_scope=out_of_scope_sets(args.data_dir),
        fit=fit,
    )
    result: dict[str, Any] = {"joint_sentiment": sentiment_scores, "joint_intent": intent_summary["folds"]}
    if not args.no_separate:
        result["separate_sentiment"] = separate_sentiment(base_model, data, SENTIMENT_DEFAULTS.seed)
    (out_dir / "joint-encoder.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(intent_summary))
    for name, scores in [*sentiment_scores.items(), ("separate", result.get("separate_sentiment", {}))]:
        for source in SENTIMENT_SCORED:
            if source in scores:
                m = scores[source]
                print(
                    f"sentiment {name}: {source}: accuracy {m['accuracy']:.3f}, recall neg/neu/pos "
                    f"{m['negative_recall']:.3f}/{m['neutral_recall']:.3f}/{m['positive_recall']:.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
