"""Regenerate reports/results.md: cross-release intent accuracy, a third release, sentiment per validation source.

Every number goes through :func:`training.evaluate.evaluate_csv`, the code behind ``triage evaluate``:
the validation sets are written as CSVs under reports/tmp/ first. ``--train-missing`` trains the
cross-release intent models (``--train-on 8k`` / ``4k5``) when their directories are absent.

    python -m training.report [--train-missing]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.paths import artifacts_dir, data_dir, reports_dir

if TYPE_CHECKING:
    from model.classifier import TextClassifier
    from model.scope import ScopeGate
    from training.data import Inquiry

CROSS_RELEASE = {"8k": "4k5", "4k5": "8k"}  # trained on -> validated on
SENTIMENT_SOURCES = (
    "cs-holdout",
    "cs-holdout-emoji",
    "tweeteval-val-holdout",
    "tweeteval-test",
    "bitext-4k5",
    "goemotions-test",
    "probe",
)


def write_csv(path: Path, rows: Iterable[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


def intent_validation_csv(data_dir: Path, trained_on: str, tmp: Path) -> Path:
    """The other release, minus texts that also occur in the training release."""
    from training import data as bitext

    held = bitext.without_texts(
        bitext.load_release(data_dir, CROSS_RELEASE[trained_on]),
        bitext.load_release(data_dir, trained_on, slot_augment=True),
    )
    return write_csv(tmp / f"intent-{CROSS_RELEASE[trained_on]}.csv", [(x.text, x.intent) for x in held])


def sentiment_csv(data_dir: Path, source: str, tmp: Path) -> Path:
    from training.sentiment_data import VALIDATION_SOURCES

    rows = VALIDATION_SOURCES[source][0](data_dir)
    return write_csv(tmp / f"sentiment-{source}.csv", [(r.text, r.label) for r in rows])


def ensure_cross_release_model(release: str, artifacts: Path, data_dir: Path, train_missing: bool) -> Path | None:
    directory = artifacts / f"intent-{release}"
    if not (directory / "manifest.json").is_file() and train_missing:
        from training.intent import train_intent
        from training.paths import default_base_model

        train_intent(data_dir, directory, default_base_model(), train_on=release)
    return directory if (directory / "manifest.json").is_file() else None


def intent_section(artifacts: Path, data_dir: Path, tmp: Path, train_missing: bool) -> list[str]:
    from training.evaluate import evaluate_csv

    lines = [
        "## Intent: cross-release validation",
        "",
        "Trained on one Bitext release, scored on the other (texts shared by both removed); models run as the "
        "service runs them (int8 ONNX on CPU).",
        "",
        "| trained on | validated on | n | accuracy | macro-F1 | ECE (calibrated) | model |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for trained_on, other in CROSS_RELEASE.items():
        model_dir = ensure_cross_release_model(trained_on, artifacts, data_dir, train_missing)
        if model_dir is None:
            lines.append(f"| {trained_on} | {other} | | | | | missing: run with --train-missing |")
            continue
        m = evaluate_csv("intent", model_dir, intent_validation_csv(data_dir, trained_on, tmp), "text", "label").metrics
        lines.append(
            f"| {trained_on} | {other} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
            f"{m['ece']:.4f} | `{model_dir.name}` |"
        )
    return lines


def intent_models(artifacts: Path) -> list[tuple[Path, str | None]]:
    """(directory, the release a cross-release model trained on) of the shipped and cross-release intent models."""
    return [(artifacts / "intent", None)] + [(artifacts / f"intent-{t}", t) for t in CROSS_RELEASE]


def seen_by(model_dir: Path, data_dir: Path) -> tuple[str, list[Inquiry], list[Inquiry]]:
    """(``--train-on``, the texts it trained on, every text it was built from), by its manifest's settings.

    Built from = trained on plus, for a model trained on both releases, the 10% kept to fit its temperature.
    """
    from model.artifacts import read_manifest
    from training.intent import INTENT_DEFAULTS, make_split

    settings = read_manifest(model_dir).hyperparameters
    train_on, seed = settings.get("train_on", "both"), settings.get("seed", INTENT_DEFAULTS.seed)
    split = make_split(data_dir, train_on, settings.get("slot_augment", True), seed)
    return train_on, split.train, split.train + (split.held_out if split.held_out_role == "calibration" else [])


def tfidf_baseline(train_items: list[Inquiry]) -> Any:  # a fitted sklearn Pipeline (sklearn has no types)
    """Word 1-2 gram TF-IDF + logistic regression, fitted on ``train_items``: the baseline the issue quotes."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    baseline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000, C=10)
    )
    return baseline.fit([x.text for x in train_items], [x.intent for x in train_items])


def accuracy_of(classifier: Any, rows: list[Inquiry]) -> float:
    predicted: Iterable[str] = classifier.predict([x.text for x in rows])  # an array of label names
    return sum(p == x.intent for p, x in zip(predicted, rows)) / len(rows)


def third_release_section(artifacts: Path, data_dir: Path, tmp: Path) -> list[str]:
    """A release no model was trained on: a sample of Bitext's 27K release (data/heldout/)."""
    from training import data as bitext
    from training.evaluate import evaluate_csv

    lines = [
        "## Intent: a third Bitext release, never trained on",
        "",
        "A sample of Bitext's 27K release (`data/heldout/`, 108 evenly spaced stretches of the file; never "
        "trained on, and no setting was chosen on it). Its inquiries carry `{{Order Number}}`-style slots: "
        "scored as released and with the slots filled (seed 0). *Unseen* leaves out texts that also occur in "
        "what the model was built from. Models run as the service runs them (int8 ONNX on CPU). Below each "
        "model, a word 1-2 gram TF-IDF + logistic regression baseline trained on the same texts.",
        "",
        "| model | trained on | slots | n | accuracy | macro-F1 | ECE | unseen n | unseen accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    path = Path(data_dir) / bitext.BITEXT_27K_SAMPLE
    if not path.is_file():
        return lines + [f"| (no {bitext.BITEXT_27K_SAMPLE} in {data_dir}) |||||||||"]
    variants = {"released": bitext.load_bitext_27k(path, fill=False), "filled": bitext.load_bitext_27k(path, seed=0)}
    for model_dir, _ in intent_models(artifacts):
        if not (model_dir / "manifest.json").is_file():
            continue
        train_on, trained, built = seen_by(model_dir, data_dir)
        for slots, rows in variants.items():
            scores = []
            for subset, items in (("all", rows), ("unseen", bitext.without_texts(rows, built))):
                csv_path = write_csv(
                    tmp / f"intent-27k-{slots}-{subset}-{model_dir.name}.csv", [(x.text, x.intent) for x in items]
                )
                scores.append(evaluate_csv("intent", model_dir, csv_path, "text", "label").metrics)
            m, u = scores
            lines.append(
                f"| `{model_dir.name}` | {train_on} | {slots} | {m['n']} | {m['accuracy']:.4f} | "
                f"{m['macro_f1']:.4f} | {m['ece']:.4f} | {u['n']} | {u['accuracy']:.4f} |"
            )
        rows, unseen = variants["released"], bitext.without_texts(variants["released"], built)
        baseline = tfidf_baseline(trained)
        lines.append(
            f"| TF-IDF + LR | {train_on} | released | {len(rows)} | {accuracy_of(baseline, rows):.4f} "
            f"| | | {len(unseen)} | {accuracy_of(baseline, unseen):.4f} |"
        )
    return lines


def out_of_scope_section(artifacts: Path, data_dir: Path, tmp: Path) -> list[str]:
    """How often text that is no inquiry would still be answered by a bot: a top intent at the abstain threshold
    or above, and not marked out of scope by the rules of :mod:`model.scope`."""
    from collections import Counter

    from model import TextClassifier
    from model.predictor import default_pass_size
    from model.scope import ScopeGate
    from training.intent import (
        ABSTAIN_THRESHOLD,
        OUT_OF_SCOPE_SOURCES,
        out_of_scope_texts,
        written_out_of_scope,
    )

    written = written_out_of_scope(data_dir)
    sentences = out_of_scope_texts(data_dir)
    kinds = sorted({k for _, k in written})
    lines = [
        "## Intent: text that is not an inquiry",
        "",
        f"Share of texts a bot would still answer (top intent at or above the abstain threshold, "
        f"{ABSTAIN_THRESHOLD}, and not marked `out_of_scope`): the {len(written)} written out-of-scope texts "
        f"(`data/out_of_scope/`, by kind) and {len(sentences)} sentences that are not inquiries "
        f"({' + '.join(OUT_OF_SCOPE_SOURCES)}); never trained on. The rest goes to a person. Models run as "
        "the service runs them.",
        "",
        "| model | written: answered | " + " | ".join(kinds) + " | sentences: answered |",
        "|---|---:|" + "---:|" * len(kinds) + "---:|",
    ]
    for model_dir, _trained_on in intent_models(artifacts):
        if not (model_dir / "manifest.json").is_file():
            continue
        classifier = TextClassifier.load(model_dir)
        gate = ScopeGate.for_tokenizer(classifier.tokenizer)

        def answered(texts: list[str], classifier: TextClassifier = classifier, gate: ScopeGate = gate) -> list[bool]:
            probs = classifier.predict_proba(texts, default_pass_size(classifier))
            return [bool(p.max() >= ABSTAIN_THRESHOLD) and gate.reason(t) is None for p, t in zip(probs, texts)]

        flags = answered([t for t, _ in written])
        by_kind = Counter(k for (_, k), a in zip(written, flags) if a)
        total = Counter(k for _, k in written)
        cells = " | ".join(f"{by_kind[k]}/{total[k]}" for k in kinds)
        lines.append(
            f"| `{model_dir.name}` | {sum(flags) / len(flags):.1%} | {cells} | "
            f"{sum(answered(sentences)) / len(sentences):.1%} |"
        )
    return lines


def sentiment_section(model_dir: Path, data_dir: Path, tmp: Path) -> list[str]:
    from training.evaluate import evaluate_csv

    lines = [
        "## Sentiment: validation sources (none trained on)",
        "",
        "Scored as the service runs the model (int8 ONNX on CPU).",
        "",
        "| source | n | accuracy | macro-F1 | negative recall | neutral recall | positive recall | ECE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if not (model_dir / "manifest.json").is_file():
        return lines + [f"| (no artifact in {model_dir}: run `triage train sentiment`) |||||||"]
    for source in SENTIMENT_SOURCES:
        m = evaluate_csv("sentiment", model_dir, sentiment_csv(data_dir, source, tmp), "text", "label").metrics
        r = {k: f"{v['recall']:.4f}" if v["support"] else "–" for k, v in m["per_class"].items()}
        lines.append(
            f"| {source} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {r['negative']} | "
            f"{r['neutral']} | {r['positive']} | {m['ece']:.4f} |"
        )
    return lines


def backend_section(artifacts: Path, data_dir: Path, tmp: Path) -> list[str]:
    """The same models run both ways: torch (bf16 on AVX-512 CPUs) vs the int8 ONNX export the service runs."""
    from model.artifacts import read_manifest
    from training.evaluate import evaluate_csv

    lines = [
        "## Speed work and accuracy: int8 ONNX vs torch, same models",
        "",
        "`triage evaluate ... --backend torch` vs `--backend onnx` on every validation set above "
        "(the service runs ONNX on CPU when the artifact has the export). Differences in points.",
        "",
        "| model | validated on | n | accuracy torch | accuracy ONNX | Δ accuracy | Δ macro-F1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    runs = [
        (artifacts / f"intent-{trained_on}", "intent", intent_validation_csv(data_dir, trained_on, tmp), other)
        for trained_on, other in CROSS_RELEASE.items()
    ]
    runs += [
        (artifacts / "sentiment", "sentiment", sentiment_csv(data_dir, source, tmp), source)
        for source in SENTIMENT_SOURCES
    ]
    for model_dir, task, csv_path, name in runs:
        if not (model_dir / "manifest.json").is_file() or read_manifest(model_dir).onnx is None:
            lines.append(f"| `{model_dir.name}` | {name} | | | | | no ONNX export: `triage export-onnx {model_dir}` |")
            continue
        a = evaluate_csv(task, model_dir, csv_path, "text", "label", backend="torch").metrics
        b = evaluate_csv(task, model_dir, csv_path, "text", "label", backend="onnx").metrics
        lines.append(
            f"| `{model_dir.name}` | {name} | {a['n']} | {a['accuracy']:.4f} | {b['accuracy']:.4f} | "
            f"{100 * (b['accuracy'] - a['accuracy']):+.2f} | {100 * (b['macro_f1'] - a['macro_f1']):+.2f} |"
        )
    return lines


def artifacts_section(artifacts: Path) -> list[str]:
    """The shipped artifacts as their manifests describe them (version, data, time, calibration)."""
    from model.artifacts import read_manifest

    lines = [
        "## Shipped artifacts",
        "",
        "| task | version | trained on | train time (s, as recorded) | temperature | ECE before → after |",
        "|---|---|---|---:|---:|---|",
    ]
    for task in ("intent", "sentiment"):
        if not (artifacts / task / "manifest.json").is_file():
            continue
        m = read_manifest(artifacts / task)
        cal = m.metrics.get("calibration", {})
        cal = cal.get(cal.get("fitted_on", ""), cal)  # sentiment: per source; intent: one report
        train = ", ".join(sorted({Path(d.path).parent.name for d in m.data if d.role == "train"}))
        lines.append(
            f"| {task} | `{m.version}` | {train} | {m.metrics.get('training', {}).get('train_seconds', '')} | "
            f"{m.temperature:.3f} | {cal.get('ece_before', '')} → {cal.get('ece_after', '')} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=artifacts_dir(), help="where the models are")
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--output", type=Path, default=reports_dir() / "results.md")
    parser.add_argument("--train-missing", action="store_true", help="train absent cross-release intent models")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help=f"also put the tables into this file between {README_START} and {README_END}",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="SECTION[,SECTION]",
        help=f"regenerate only these sections of the existing results ({', '.join(SECTIONS)}); the others stay",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = reports_dir() / "tmp"
    build = {
        "intent": lambda: intent_section(args.artifacts, args.data_dir, tmp, args.train_missing),
        "third-release": lambda: third_release_section(args.artifacts, args.data_dir, tmp),
        "out-of-scope": lambda: out_of_scope_section(args.artifacts, args.data_dir, tmp),
        "sentiment": lambda: sentiment_section(args.artifacts / "sentiment", args.data_dir, tmp),
        "backend": lambda: backend_section(args.artifacts, args.data_dir, tmp),
        "artifacts": lambda: artifacts_section(args.artifacts),
    }
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    if args.only:
        chosen = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in chosen if name not in build]
        if unknown or not args.output.is_file():
            parser.error(f"--only takes {', '.join(SECTIONS)} and needs an existing {args.output}")
        lines = args.output.read_text().splitlines()
        for name in chosen:
            lines = replace_section(lines, build[name]())
        lines[2] += f" Regenerated on {stamp}: {', '.join(chosen)}."
    else:
        lines = ["# Results", "", f"Generated by `python -m training.report` on {stamp}.", ""]
        for name in SECTIONS:
            lines += build[name]() + [""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")
    if args.readme:
        embed(args.readme, "\n".join(lines[2:]))
        print(f"updated {args.readme}")
    return 0


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
SECTIONS = ("intent", "third-release", "out-of-scope", "sentiment", "backend", "artifacts")


def replace_section(lines: list[str], section: list[str]) -> list[str]:
    """``lines`` with the section under ``section``'s heading replaced by it (appended when absent)."""
    heading = section[0]
    if heading not in lines:
        return [*lines, *section, ""]
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [*lines[:start], *section, "", *lines[end:]]


def embed(readme: Path, body: str, start_marker: str = README_START, end_marker: str = README_END) -> None:
    """Replace what stands between the markers of ``readme`` (the results markers by default) with ``body``."""
    text = readme.read_text()
    start, end = text.index(start_marker) + len(start_marker), text.index(end_marker)
    readme.write_text(text[:start] + "\n" + body.strip() + "\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
