"""``triage train intent``: fine-tune on Bitext, validate across releases, calibrate, save."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.onnx import AccuracyCheck
from training import data as bitext
from training.artifact import data_file, save_artifact
from training.calibration import calibration_report, fit_temperature, softmax
from training.engine import OutlierExposure, TrainConfig, predict_logits, seed_everything, train
from training.metrics import classification_metrics, summary
from training.modeling import load_base, pick_device

# the embeddings and the two lowest of MiniLM's six layers stay as pretrained (training/README.md, "Freezing")
INTENT_DEFAULTS = TrainConfig(epochs=3.0, lr=1e-4, batch_size=32, max_length=64, seed=13, freeze_layers=2)

#: text that is not a customer-service inquiry, for outlier exposure: Reddit comments and movie-review sentences
OUTLIER_ROWS = 6000
#: never trained on: how often text that is not an inquiry still gets a confident intent
OUT_OF_SCOPE_SOURCES = ("goemotions-test", "sst5-test")
#: the routing policy's default abstain threshold: an intent below it goes to a human
ABSTAIN_THRESHOLD = 0.5


def _sentences(data_dir: Path, split: str) -> list[str]:
    """The distinct GoEmotions and SST-5 texts of ``split``, sorted: sentences that are not inquiries."""
    from training.sentiment_data import load_goemotions, load_sst5

    return sorted({row.text for row in load_goemotions(data_dir, split) + load_sst5(data_dir, split)})


def outlier_texts(data_dir: Path, rows: int, seed: int) -> tuple[list[str], list]:
    """``rows`` texts drawn (seeded) from GoEmotions train and SST-5 train, with their data files."""
    pool = _sentences(data_dir, "train")
    texts = random.Random(seed).sample(pool, min(rows, len(pool)))
    files = [data_file(Path(data_dir) / "goemotions" / "train.tsv", None, "outliers"),
             data_file(Path(data_dir) / "sst5" / "train.txt", None, "outliers")]
    return texts, files


def out_of_scope_texts(data_dir: Path) -> list[str]:
    return _sentences(data_dir, "test")


def confident_share(probabilities: np.ndarray, threshold: float = ABSTAIN_THRESHOLD) -> float:
    """The share of texts whose top intent reaches ``threshold`` (the ones not sent to a human for it)."""
    return round(float((probabilities.max(axis=1) >= threshold).mean()), 4) if len(probabilities) else 0.0


@dataclass(frozen=True)
class IntentSplit:
    train: list[bitext.Inquiry]
    held_out: list[bitext.Inquiry]
    held_out_role: str  # "validation" (the other release) or "calibration" (a seeded slice)
    files: list  # DataFile records


def _file_rows(items: list[bitext.Inquiry]) -> int:
    """Rows read from the file (after de-duplication), not counting {{Slot}} copies."""
    return sum(item.source != "4k5-slots" for item in items)


def make_split(data_dir: Path, train_on: str, slot_augment: bool, seed: int) -> IntentSplit:
    """``train_on`` = 8k or 4k5 validates on the other release; ``both`` holds out 10% for calibration."""
    paths = {name: Path(data_dir) / rel for name, rel in bitext.RELEASES.items()}
    releases = {name: bitext.load_release(data_dir, name, slot_augment) for name in paths}
    if train_on == "both":
        combined = bitext.dedupe(releases["8k"] + releases["4k5"])
        train_rows, held = bitext.stratified_holdout(combined, 0.1, seed, key=lambda item: item.intent)
        files = [data_file(paths[n], _file_rows(releases[n]), "train") for n in ("8k", "4k5")]
        return IntentSplit(train_rows, held, "calibration", files)
    if train_on not in releases:
        raise ValueError(f"--train-on must be both, 8k or 4k5, not {train_on!r}")
    other = "4k5" if train_on == "8k" else "8k"
    train_rows = releases[train_on]
    plain_other = bitext.load_release(data_dir, other, slot_augment=False)
    held = bitext.without_texts(plain_other, train_rows)
    files = [data_file(paths[train_on], _file_rows(train_rows), "train"), data_file(paths[other], len(held), "validation")]
    return IntentSplit(train_rows, held, "validation", files)


def train_intent(
    data_dir: Path,
    output: Path,
    base_model: str,
    config: TrainConfig = INTENT_DEFAULTS,
    train_on: str = "both",
    slot_augment: bool = True,
    outlier_exposure: bool = False,
):
    """Train, calibrate and save an intent artifact; returns its Manifest."""
    split = make_split(data_dir, train_on, slot_augment, config.seed)
    outliers, outlier_files = outlier_texts(data_dir, OUTLIER_ROWS, config.seed) if outlier_exposure else ([], [])
    exposure = OutlierExposure()
    categories = bitext.category_map(split.train + split.held_out)
    labels = sorted(categories)
    label_id = {label: i for i, label in enumerate(labels)}
    seed_everything(config.seed)  # the new classification head is initialised here
    model, tokenizer = load_base(base_model, labels)
    device = pick_device()
    print(f"intent: {len(split.train)} training texts, {len(split.held_out)} {split.held_out_role} texts, "
          f"{len(labels)} intents, device {device.description}")
    if outliers:
        print(f"intent: outlier exposure on {len(outliers)} texts that are not inquiries (GoEmotions, SST-5)")
    stats = train(model, tokenizer, [x.text for x in split.train], [label_id[x.intent] for x in split.train],
                  config, device, desc="intent", outliers=outliers, outlier=exposure)
    gold = np.array([label_id[x.intent] for x in split.held_out])
    logits = predict_logits(model, tokenizer, [x.text for x in split.held_out], device, config.max_length)
    temperature = fit_temperature(logits, gold)
    held_probs = softmax(logits, temperature)
    held_metrics = classification_metrics(held_probs, gold, labels)
    scope_texts = out_of_scope_texts(data_dir)
    scope_probs = softmax(predict_logits(model, tokenizer, scope_texts, device, config.max_length), temperature)
    metrics = {
        split.held_out_role: summary(held_metrics),
        f"{split.held_out_role}_per_class": held_metrics["per_class"],
        "calibration": calibration_report(logits, gold, temperature),
        "out_of_scope": {"sources": list(OUT_OF_SCOPE_SOURCES), "n": len(scope_texts), "threshold": ABSTAIN_THRESHOLD,
                         "confident_share": confident_share(scope_probs),
                         f"{split.held_out_role}_confident_share": confident_share(held_probs)},
        "training": stats | {"device": device.description},
    }
    hparams = config.as_dict() | {"train_on": train_on, "slot_augment": slot_augment,
                                  "outlier_exposure": exposure.as_dict() | {"rows": len(outliers)} if outliers else None}
    manifest = save_artifact(output, model, tokenizer, {
        "task": "intent", "base_model": base_model, "labels": labels, "categories": categories,
        "temperature": temperature, "max_length": config.max_length, "data": split.files + outlier_files,
        "hyperparameters": hparams, "metrics": metrics,
    }, probe_texts=random.Random(config.seed).sample([x.text for x in split.held_out], min(1000, len(split.held_out))),
       checks=[AccuracyCheck(split.held_out_role, [x.text for x in split.held_out], gold)])
    print(f"intent: {split.held_out_role} accuracy {held_metrics['accuracy']:.4f}, "
          f"T={temperature:.3f}, saved {output} ({manifest.version})")
    print(f"intent: confidence >= {ABSTAIN_THRESHOLD} on {metrics['out_of_scope']['confident_share']:.1%} of "
          f"{len(scope_texts)} texts that are not inquiries, on "
          f"{metrics['out_of_scope'][f'{split.held_out_role}_confident_share']:.1%} of the {split.held_out_role} inquiries")
    return manifest
