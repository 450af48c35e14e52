"""Can one encoder pass serve both answers? A sentiment head on the intent model's frozen features, measured.

``python -m training.shared_encoder [--intent DIR] [--sentiment DIR]`` encodes the sentiment training mix with
the intent artifact's encoder (its pooled [CLS] output, what the intent head reads, and the mean of its last
hidden states), fits a logistic-regression sentiment head on those features (the regularisation chosen on the
held-out quarter of TweetEval val, as the sentiment recipe's validation is), and scores it on the validation
sources beside the separate sentiment artifact. If the shared head held the sentiment model's quality, the
service could run one encoder pass per inquiry instead of two. Writes ``reports/shared-encoder.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training import sentiment_data as sd
from training.metrics import classification_metrics, summary
from training.paths import artifacts_dir, data_dir, reports_dir

LABELS = ["negative", "neutral", "positive"]
SCORED = ("tweeteval-test", "cs-holdout", "goemotions-test", "probe")
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def encode(directory: Path, texts: list[str], batch_size: int = 128) -> NDArray[np.float32]:
    """[pooled CLS | mean of the last hidden states] of the artifact's encoder, float32, one row per text."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    network = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    bert = network.base_model
    rows = []
    order = np.argsort([len(t) for t in texts])
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in index], truncation=True, max_length=64, padding=True, return_tensors="pt"
            )
            out = bert(**batch)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
            rows.append((index, torch.cat([out.pooler_output, mean], dim=1).numpy()))
    features = np.empty((len(texts), rows[0][1].shape[1]), dtype=np.float32)
    for index, values in rows:
        features[index] = values
    return features


def _gold(rows: list[sd.Labeled]) -> NDArray[np.int64]:
    return np.array([LABELS.index(r.label) for r in rows])


def run(intent: Path, sentiment: Path, data: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from model.classifier import TextClassifier

    train_rows = sd.build_mix(data)
    sources = {name: sd.VALIDATION_SOURCES[name][0](data) for name in ("tweeteval-val-holdout", *SCORED)}
    print(f"encoding {len(train_rows)} training texts and {sum(map(len, sources.values()))} validation texts")
    scaler = StandardScaler()
    x_train = scaler.fit_transform(encode(intent, [r.text for r in train_rows]))
    x = {name: scaler.transform(encode(intent, [r.text for r in rows])) for name, rows in sources.items()}
    y_train = _gold(train_rows)
    best: tuple[float, float, Any] | None = None
    for c in C_GRID:
        head = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x_train, y_train)
        accuracy = float((head.predict(x["tweeteval-val-holdout"]) == _gold(sources["tweeteval-val-holdout"])).mean())
        print(f"C={c}: tweeteval-val-holdout accuracy {accuracy:.4f}")
        if best is None or accuracy > best[0]:
            best = (accuracy, c, head)
    assert best is not None
    _, chosen_c, head = best
    separate = TextClassifier.load(sentiment, device="cpu")
    result: dict[str, Any] = {"intent_model": str(intent), "sentiment_model": str(sentiment), "C": chosen_c}
    for name in SCORED:
        gold = _gold(sources[name])
        shared = summary(classification_metrics(head.predict_proba(x[name]).astype(np.float32), gold, LABELS), LABELS)
        probs = separate.predict_proba([r.text for r in sources[name]])
        order = [separate.labels.index(label) for label in LABELS]
        alone = summary(classification_metrics(probs[:, order], gold, LABELS), LABELS)
        result[name] = {"shared_encoder": shared, "separate_model": alone}
        print(
            f"{name:16s} shared {shared['accuracy']:.4f} (neg {shared['negative_recall']:.3f}) | "
            f"separate {alone['accuracy']:.4f} (neg {alone['negative_recall']:.3f})"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.shared_encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--intent", type=Path, default=artifacts_dir() / "intent")
    parser.add_argument("--sentiment", type=Path, default=artifacts_dir() / "sentiment")
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--output", type=Path, default=reports_dir() / "shared-encoder.json")
    args = parser.parse_args(argv)
    result = run(args.intent, args.sentiment, args.data_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
