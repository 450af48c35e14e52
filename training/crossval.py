"""Leave-one-release-out cross-validation of an intent recipe: ``triage crossval intent``.

Bitext's releases are sampled differently (each has phrasings the others never use), so a model is only as
good as its score on a release it has not read. Each fold trains the recipe on two of the three vendored
releases (4k5, 8k, the 27K sample) and scores the third, minus every text that also occurs in the two it
trained on. A recipe is chosen by its **worst** fold: the mean hides the direction that fails.

Calibration is cross-validated too: fold k's temperature is fitted on the held-out logits of the other folds
(those that score none of its releases), so its ECE is what an unseen release would see. The temperature
pooled over every fold, the hard direction included, is the one the shipped model (trained on every release)
stores, see :func:`training.intent.train_intent`: a fitted temperature is only as good as the distance to
the training wording it was fitted at, and an unseen release can be as far as the hardest fold.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from model.scope import ScopeGate
from schemas.policy import DEFAULT_ABSTAIN_THRESHOLD
from training import data as bitext
from training.calibration import expected_calibration_error, fit_temperature, softmax
from training.slots import fill_slots, has_slots

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from model.classifier import DeviceChoice
    from training.intent import IntentRecipe

    #: trains one fold's model: (fold, intent labels) -> (model, tokenizer, device, stats)
    Fitted = tuple[PreTrainedModel, PreTrainedTokenizerBase, DeviceChoice, dict[str, Any]]
    FitFold = Callable[["Fold", list[str]], Fitted]

#: the three vendored releases a fold can hold out
FOLD_RELEASES = ("4k5", "8k", "27k")
#: the routing policy's default abstain threshold, scored on every fold (the in-scope abstain rate)
ABSTAIN_THRESHOLD = DEFAULT_ABSTAIN_THRESHOLD


#: a harder direction beside the three folds: the 4k5 and 27K releases are of one family (written alike),
#: so holding out both and training on the 8k release alone is the nearest stand-in for a release unlike both
STRESS_FOLD = "4k5+27k"


@dataclass(frozen=True)
class Fold:
    held_out: str  # one release, or several joined by "+"
    train: list[bitext.Inquiry]
    test: list[bitext.Inquiry]

    @property
    def train_on(self) -> list[str]:
        return [name for name in FOLD_RELEASES if name not in self.held_out.split("+")]


def load_fold_release(data_dir: Path, name: str, for_training: bool) -> list[bitext.Inquiry]:
    """A release as a fold uses it. For training, 4k5 brings its ``{{Slot}}`` copies and 27K keeps its slots
    (the augmentation fills them afresh each epoch); for scoring, slots are filled once (seeded), as a
    customer would write a real order number."""
    if name == "27k":
        return bitext.load_bitext_27k(Path(data_dir) / bitext.BITEXT_27K_SAMPLE, fill=False)
    return bitext.load_release(data_dir, name, slot_augment=for_training)


def make_folds(data_dir: Path, held_out: tuple[str, ...] = FOLD_RELEASES) -> list[Fold]:
    """One fold per held-out release; its test set never shares a (normalised) text with its training set."""
    slotted = bitext.entity_templates(Path(data_dir) / bitext.BITEXT_4K5)
    folds = []
    for name in held_out:
        parts = name.split("+")
        if not set(parts) <= set(FOLD_RELEASES) or len(set(parts)) == len(FOLD_RELEASES):
            raise ValueError(f"cannot hold out {name!r}: hold out one or two of {list(FOLD_RELEASES)}, joined by '+'")
        train = bitext.dedupe(
            x
            for other in FOLD_RELEASES
            if other not in parts
            for x in load_fold_release(data_dir, other, for_training=True)
        )
        test = without_templates(
            bitext.dedupe(x for part in parts for x in load_fold_release(data_dir, part, for_training=False)),
            train,
            slotted,
        )  # a text the training set has shares its template too
        rng = random.Random(0)
        test = [x if not has_slots(x.text) else replace(x, text=fill_slots(x.text, rng)) for x in test]
        folds.append(Fold(name, train, bitext.without_texts(test, train)))
    return folds


def without_templates(
    test: list[bitext.Inquiry], train: list[bitext.Inquiry], slotted: dict[str, str]
) -> list[bitext.Inquiry]:
    """``test`` minus texts written from a template the training set also has: the same words with another
    order number, amount or ``{{Slot}}`` (the releases are generated from templates, and one release's
    "{{Order Number}}" is another's "00004587345"); ``slotted`` maps 4k5 texts to their slotted template."""
    seen = {bitext.template_key(x.text) for x in train}
    return [
        x
        for x in test
        if bitext.template_key(x.text) not in seen and slotted.get(bitext.normalise_key(x.text)) not in seen
    ]


def fold_scores(
    logits: NDArray[np.floating], gold: NDArray[np.integer], labels: list[str], temperature: float
) -> dict[str, Any]:
    from training.metrics import classification_metrics, confusion
    from training.render import worst_confusions

    probs = softmax(logits, temperature)
    m = classification_metrics(probs, gold, labels)
    f1 = {name: row["f1"] for name, row in m["per_class"].items() if row["support"]}
    worst = min(f1, key=f1.__getitem__)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "n": m["n"],
        "ece_uncalibrated": round(expected_calibration_error(softmax(logits), gold), 4),
        "ece": m["ece"],
        "temperature": round(temperature, 4),
        "abstain_share": round(float((probs.max(axis=1) < ABSTAIN_THRESHOLD).mean()), 4),
        "worst_intent": {"intent": worst, "f1": f1[worst]},
        "per_class": m["per_class"],
        "top_confusions": worst_confusions(confusion(probs, gold, len(labels)), labels),
    }


def summarise(
    results: Mapping[str, dict[str, Any]],
    logits: Mapping[str, NDArray[np.floating]],
    gold: Mapping[str, NDArray[np.integer]],
    labels: list[str],
) -> dict[str, Any]:
    """Per fold: scores at a temperature fitted on the other folds that score none of its releases; the worst
    leave-one-out fold; and the temperature pooled over every fold, the one a model trained on all releases
    stores. A fold holding out two releases is scored and pools into the temperature, but chooses nothing."""
    loro = [n for n in results if "+" not in n]
    folds = {}
    for name in results:
        mine = set(name.split("+"))
        others = [n for n in results if n != name and not mine & set(n.split("+"))]
        t = (
            fit_temperature(np.concatenate([logits[n] for n in others]), np.concatenate([gold[n] for n in others]))
            if others
            else 1.0
        )
        folds[name] = results[name] | fold_scores(logits[name], gold[name], labels, t)
    names = list(results)
    out: dict[str, Any] = {
        "folds": folds,
        "pooled_temperature": round(
            fit_temperature(np.concatenate([logits[n] for n in names]), np.concatenate([gold[n] for n in names])), 4
        ),
    }
    if loro:
        worst = min(loro, key=lambda n: folds[n]["accuracy"])
        out |= {
            "worst_fold": {
                "held_out": worst,
                "accuracy": folds[worst]["accuracy"],
                "macro_f1": folds[worst]["macro_f1"],
            },
            "mean_accuracy": round(float(np.mean([folds[n]["accuracy"] for n in loro])), 4),
        }
    return out


def run_crossval(
    data_dir: Path,
    base_model: str,
    recipe: IntentRecipe,
    held_out: tuple[str, ...] = FOLD_RELEASES,
    out_dir: Path | None = None,
    out_of_scope: dict[str, list[str]] | None = None,
    fit: FitFold | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` once per fold, score each held-out release; returns (and writes) the summary.

    ``out_of_scope``: named sets of texts that are no inquiry; each fold reports the share of them a bot would
    still answer: the top intent at the abstain threshold or above, and not marked by :mod:`model.scope`.
    ``fit``: trains a fold's model another way than :func:`training.intent.fit_intent` with ``recipe``
    (:mod:`training.joint_encoder`)."""
    from training.engine import predict_logits
    from training.intent import fit_intent

    recipe, notes = recipe.for_data(data_dir)
    for note in notes:
        print(f"crossval: {note}")
    outliers = recipe.outliers(data_dir)[0] if fit is None else []
    folds = make_folds(data_dir, held_out)
    labels = sorted(bitext.category_map(x for f in folds for x in f.train + f.test))
    label_id = {label: i for i, label in enumerate(labels)}
    results: dict[str, dict[str, Any]] = {}
    logits: dict[str, NDArray[np.float32]] = {}
    gold: dict[str, NDArray[np.int64]] = {}
    scope: dict[str, NDArray[np.float32]] = {}
    gated: dict[str, NDArray[np.bool_]] = {}
    for fold in folds:
        print(
            f"crossval: fold {fold.held_out}: train on {' + '.join(fold.train_on)} ({len(fold.train)} texts), "
            f"score {fold.held_out} ({len(fold.test)} unseen texts)"
        )
        if fit is None:
            model, tokenizer, device, stats = fit_intent(
                data_dir, fold.train, labels, base_model, recipe, desc=f"fold {fold.held_out}", outliers=outliers
            )
        else:
            model, tokenizer, device, stats = fit(fold, labels)
        logits[fold.held_out] = predict_logits(
            model, tokenizer, [x.text for x in fold.test], device, recipe.config.max_length
        )
        gold[fold.held_out] = np.array([label_id[x.intent] for x in fold.test])
        gate = ScopeGate.for_tokenizer(tokenizer)
        for set_name, texts in (out_of_scope or {}).items():
            scope[f"{fold.held_out}/{set_name}"] = predict_logits(
                model, tokenizer, texts, device, recipe.config.max_length
            )
            gated[f"{fold.held_out}/{set_name}"] = np.array([gate.reason(t) is not None for t in texts])
        acc = float((logits[fold.held_out].argmax(1) == gold[fold.held_out]).mean())
        print(f"crossval: fold {fold.held_out}: accuracy {acc:.4f}")
        results[fold.held_out] = {
            "train_on": fold.train_on,
            "n_train": len(fold.train),
            "train_seconds": stats["train_seconds"],
        }
    summary = summarise(results, logits, gold, labels) | {"recipe": recipe.as_dict(), "base_model": base_model}
    for key, z in scope.items():  # answered by a bot: confident, and not marked out of scope by the rules
        name, set_name = key.split("/")
        fold = summary["folds"][name]
        confident = softmax(z, fold["temperature"]).max(axis=1) >= ABSTAIN_THRESHOLD
        fold.setdefault("out_of_scope_confident", {})[set_name] = round(float((confident & ~gated[key]).mean()), 4)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "crossval.json").write_text(json.dumps(summary, indent=1) + "\n")
        np.savez_compressed(
            out_dir / "crossval-logits.npz",
            # the default, named so that mypy does not take the unpacked arrays below for it
            allow_pickle=True,
            labels=np.array(labels),
            **{f"logits_{k}": v for k, v in logits.items()},
            **{f"gold_{k}": v for k, v in gold.items()},
            **{f"scope_{k.replace('/', '_')}": v for k, v in scope.items()},
        )
        (out_dir / "crossval.md").write_text(markdown(summary) + "\n\n" + markdown_detail(summary) + "\n")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    scope_sets = sorted({k for f in summary["folds"].values() for k in f.get("out_of_scope_confident", {})})
    lines = [
        "| held out | trained on | n | accuracy | macro-F1 | worst intent (F1) | ECE raw → calibrated | T | "
        "in-scope abstain |" + "".join(f" out-of-scope answered: {k} |" for k in scope_sets),
        "|---|---|---:|---:|---:|---|---|---:|---:|" + "---:|" * len(scope_sets),
    ]
    for name, f in summary["folds"].items():
        answered = f.get("out_of_scope_confident", {})
        lines.append(
            f"| {name} | {' + '.join(f['train_on'])} | {f['n']} | {f['accuracy']:.4f} | {f['macro_f1']:.4f} | "
            f"{f['worst_intent']['intent']} ({f['worst_intent']['f1']:.3f}) | "
            f"{f['ece_uncalibrated']:.3f} → {f['ece']:.3f} | {f['temperature']:.2f} | "
            f"{f['abstain_share']:.1%} |" + "".join(f" {answered.get(k, 0):.1%} |" for k in scope_sets)
        )
    lines.append("")
    if "worst_fold" in summary:
        w = summary["worst_fold"]
        lines.append(
            f"Worst leave-one-release-out fold: **{w['held_out']}** at accuracy {w['accuracy']:.4f} "
            f"(macro-F1 {w['macro_f1']:.4f}); mean {summary['mean_accuracy']:.4f}. "
        )
    lines[-1] += f"Temperature pooled over every fold: {summary['pooled_temperature']:.3f}."
    return "\n".join(lines)


def markdown_detail(summary: dict[str, Any]) -> str:
    """Per-intent F1 on every fold, and each fold's worst confusions."""
    folds = summary["folds"]
    names = list(folds)
    intents = sorted({i for f in folds.values() for i in f["per_class"]})
    lines = ["| intent | " + " | ".join(f"F1 {n}" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for intent in intents:
        cells = []
        for n in names:
            row = folds[n]["per_class"].get(intent)
            cells.append(f"{row['f1']:.3f}" if row and row["support"] else "–")
        lines.append(f"| {intent} | " + " | ".join(cells) + " |")
    for n in names:
        pairs = ", ".join(f"{c['true']} → {c['predicted']} {c['count']}" for c in folds[n]["top_confusions"][:5])
        lines += ["", f"Fold {n}, most frequent confusions (true → predicted, texts): {pairs or 'none'}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Re-render a crossval.json as markdown; ``--embed FILE`` also puts it between FILE's crossval markers."""
    import argparse

    from training.paths import reports_dir
    from training.report import embed

    parser = argparse.ArgumentParser(prog="python -m training.crossval", description=main.__doc__)
    parser.add_argument("summary", type=Path, nargs="?", default=reports_dir() / "crossval" / "crossval.json")
    parser.add_argument("--embed", type=Path, default=None, metavar="FILE")
    args = parser.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    text = markdown(summary) + "\n\n" + markdown_detail(summary)
    print(text)
    if args.embed:
        embed(args.embed, text, "<!-- crossval:start -->", "<!-- crossval:end -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
