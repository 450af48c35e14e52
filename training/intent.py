"""``triage train intent``: fine-tune on Bitext, validate across releases, calibrate, save."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from model.artifacts import DataFile, Manifest, ReplyFile
from schemas.policy import DEFAULT_ABSTAIN_THRESHOLD
from training import data as bitext
from training import feedback, replies, taxonomy
from training.artifact import data_file, save_artifact
from training.augment import Augmentation, augment
from training.calibration import calibration_report, fit_temperature, softmax
from training.engine import (
    OutlierExposure,
    TrainConfig,
    predict_logits,
    seed_everything,
    train,
)
from training.errors import TaxonomyError
from training.metrics import classification_metrics, summary
from training.modeling import load_base, pick_device
from training.onnx_export import AccuracyCheck
from training.paths import reports_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from model.classifier import DeviceChoice

# chosen by the worst leave-one-release-out fold (`triage crossval intent`, docs/model-card.md): every layer
# fine-tuned at a constant rate for two epochs on label-preserving variants, targets smoothed by 0.1
INTENT_DEFAULTS = TrainConfig(
    epochs=2.0,
    lr=1e-4,
    batch_size=32,
    max_length=64,
    seed=13,
    freeze_layers=-1,
    label_smoothing=0.1,
    schedule="constant",
)

#: what ``triage crossval intent`` writes by default; the shipped model takes its temperature from it
CROSSVAL_REPORT: Path | None = None  # None: TRIAGE_HOME/reports/crossval/crossval.json

#: text that is not a customer-service inquiry, for outlier exposure: Reddit comments and movie-review sentences
OUTLIER_ROWS = 6000
#: never trained on: how often text that is not an inquiry still gets a confident intent
OUT_OF_SCOPE_SOURCES = ("goemotions-test", "sst5-test")
#: the routing policy's default abstain threshold: an intent below it goes to a human
ABSTAIN_THRESHOLD = DEFAULT_ABSTAIN_THRESHOLD


def _sentences(data_dir: Path, split: str) -> list[str]:
    """The distinct GoEmotions and SST-5 texts of ``split``, sorted: sentences that are not inquiries."""
    from training.sentiment_data import load_goemotions, load_sst5

    return sorted({row.text for row in load_goemotions(data_dir, split) + load_sst5(data_dir, split)})


#: requests and questions for other assistants (weather, trivia, timers, recipes, travel, chit-chat), written
#: for outlier exposure (data/outliers/SOURCE.md): the sentences are statements, and a model that saw only
#: statements as outliers read any request as an inquiry ("book a table for two at 8pm" as place_order, 0.98)
OUTLIER_REQUESTS = "outliers/requests.txt"
#: each request rides along this many times as often as a sentence (about one outlier in twenty): 8 (about one in
#: five) answered fewer out-of-scope texts but made the model refuse informal inquiries with words Bitext does
#: not use ("where is my package?" 0.93 -> 0.04), docs/model-card.md "Out of scope"
REQUEST_REPEATS = 2


def read_requests(data_dir: Path) -> list[str]:
    path = Path(data_dir) / OUTLIER_REQUESTS
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def outlier_texts(data_dir: Path, rows: int, seed: int, requests: bool = False) -> tuple[list[str], list[DataFile]]:
    """``rows`` texts drawn (seeded) from GoEmotions train and SST-5 train, with their data files; with
    ``requests``, also the written requests (:data:`OUTLIER_REQUESTS`), each :data:`REQUEST_REPEATS` times."""
    pool = _sentences(data_dir, "train")
    texts = random.Random(seed).sample(pool, min(rows, len(pool)))
    files = [
        data_file(Path(data_dir) / "goemotions" / "train.tsv", None, "outliers"),
        data_file(Path(data_dir) / "sst5" / "train.txt", None, "outliers"),
    ]
    if requests:  # IntentRecipe.for_data has turned them off where the file is missing
        written = read_requests(data_dir)
        texts += written * REQUEST_REPEATS
        files.append(data_file(Path(data_dir) / OUTLIER_REQUESTS, len(written), "outliers"))
    return texts, files


def out_of_scope_texts(data_dir: Path) -> list[str]:
    """GoEmotions and SST-5 test sentences: text in shared/ that is no inquiry (never trained on)."""
    return _sentences(data_dir, "test")


#: texts written for this project that are none of the 27 intents (data/out_of_scope/SOURCE.md)
WRITTEN_OUT_OF_SCOPE = "out_of_scope/out_of_scope.csv"


def written_out_of_scope(data_dir: Path) -> list[tuple[str, str]]:
    """(text, kind) of the written out-of-scope set: weather, chit-chat, other languages, gibberish, ..."""
    return [(row["text"], row["kind"]) for row in bitext.read_csv_rows(Path(data_dir) / WRITTEN_OUT_OF_SCOPE)]


def out_of_scope_sets(data_dir: Path) -> dict[str, list[str]]:
    """The out-of-scope sets every evaluation scores: the written one and the sentences from shared/."""
    return {"written": [t for t, _ in written_out_of_scope(data_dir)], "sentences": out_of_scope_texts(data_dir)}


def confident_share(probabilities: NDArray[np.floating], threshold: float = ABSTAIN_THRESHOLD) -> float:
    """The share of texts whose top intent reaches ``threshold`` (the ones not sent to a human for it)."""
    return round(float((probabilities.max(axis=1) >= threshold).mean()), 4) if len(probabilities) else 0.0


@dataclass(frozen=True)
class IntentRecipe:
    """Everything that decides how an intent model learns, besides the data it is given."""

    config: TrainConfig = INTENT_DEFAULTS
    augmentation: Augmentation | None = None
    outlier_exposure: bool = False
    # the written requests join the outliers (Bitext's taxonomy only: a team's own intents may include them)
    request_outliers: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.config.as_dict(),
            "augmentation": self.augmentation.as_dict() if self.augmentation else None,
            "outlier_exposure": self.outlier_exposure,
            "request_outliers": self.outlier_exposure and self.request_outliers,
            "request_repeats": REQUEST_REPEATS if self.outlier_exposure and self.request_outliers else 0,
        }

    def for_data(self, data_dir: Path, own_taxonomy: bool = False) -> tuple[IntentRecipe, list[str]]:
        """This recipe less what ``data_dir`` cannot give it, and a line per thing left out.

        The one place that decides it, so that ``triage crossval`` and ``triage train`` record the recipe they
        actually ran (a model trained on every release takes the temperature of the folds of the same recipe).
        """
        recipe, notes = self, []
        if own_taxonomy and recipe.outlier_exposure and not _has_sentences(data_dir, "train"):
            notes.append(f"no GoEmotions / SST-5 texts in {data_dir}: training without outlier exposure")
            recipe = replace(recipe, outlier_exposure=False)
        if own_taxonomy and recipe.request_outliers:  # "reset my router" is another team's inquiry
            recipe = replace(recipe, request_outliers=False)
        if recipe.outlier_exposure and recipe.request_outliers and not (Path(data_dir) / OUTLIER_REQUESTS).is_file():
            notes.append(f"no {OUTLIER_REQUESTS} in {data_dir}: outlier exposure on the sentences alone")
            recipe = replace(recipe, request_outliers=False)
        return recipe, notes

    def outliers(self, data_dir: Path) -> tuple[list[str], list[DataFile]]:
        """The outlier texts this recipe trains with (none without outlier exposure), and their data files."""
        if not self.outlier_exposure:
            return [], []
        return outlier_texts(data_dir, OUTLIER_ROWS, self.config.seed, self.request_outliers)


def default_augmentation() -> Augmentation:
    return Augmentation()


def default_recipe() -> IntentRecipe:
    """The recipe ``triage train intent`` uses without options."""
    return IntentRecipe(INTENT_DEFAULTS, default_augmentation(), outlier_exposure=True, request_outliers=True)


def fit_intent(
    data_dir: Path,
    items: list[bitext.Inquiry],
    labels: list[str],
    base_model: str,
    recipe: IntentRecipe,
    desc: str = "intent",
    outliers: list[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, DeviceChoice, dict[str, Any]]:
    """Fine-tune ``base_model`` on ``items`` with ``recipe``: (model, tokenizer, device, stats).

    ``outliers``: the recipe's outlier texts when the caller has read them already (:meth:`IntentRecipe.outliers`).
    """
    if outliers is None:
        outliers = recipe.outliers(data_dir)[0]
    label_id = {label: i for i, label in enumerate(labels)}
    seed_everything(recipe.config.seed)  # the new classification head is initialised here
    model, tokenizer = load_base(base_model, labels)
    device = pick_device()
    variant = None
    if recipe.augmentation is not None:
        config = recipe.augmentation

        def variant(text: str, rng: random.Random) -> str:
            return augment(text, rng, config)

    stats = train(
        model,
        tokenizer,
        [x.text for x in items],
        [label_id[x.intent] for x in items],
        recipe.config,
        device,
        desc=desc,
        outliers=outliers,
        outlier=OutlierExposure(),
        augment=variant,
    )
    return model, tokenizer, device, stats


@dataclass(frozen=True)
class IntentSplit:
    train: list[bitext.Inquiry]
    held_out: list[bitext.Inquiry]
    held_out_role: Literal["validation", "calibration"]  # the other release, or a seeded slice
    files: list[DataFile]


def _file_rows(items: list[bitext.Inquiry]) -> int:
    """Rows read from the file (after de-duplication), not counting {{Slot}} copies."""
    return sum(item.source != "4k5-slots" for item in items)


def make_split(data_dir: Path, train_on: str, slot_augment: bool, seed: int) -> IntentSplit:
    """``train_on`` = 8k or 4k5 validates on the other release; ``all`` (4k5 + 8k + the 27K sample) and
    ``both`` (4k5 + 8k) hold out 10% of each intent for the int8 export's checks and an in-distribution score."""
    paths = {name: Path(data_dir) / rel for name, rel in bitext.RELEASES.items()}
    releases = {name: bitext.load_release(data_dir, name, slot_augment) for name in paths}
    if train_on in ("all", "both"):
        names = ["8k", "4k5"]
        if train_on == "all":
            paths["27k"] = Path(data_dir) / bitext.BITEXT_27K_SAMPLE
            releases["27k"] = bitext.load_bitext_27k(paths["27k"], fill=False)
            names.append("27k")
        combined = bitext.dedupe(x for n in names for x in releases[n])
        train_rows, held = bitext.stratified_holdout(combined, 0.1, seed, key=lambda item: item.intent)
        files = [data_file(paths[n], _file_rows(releases[n]), "train") for n in names]
        return IntentSplit(train_rows, held, "calibration", files)
    if train_on not in releases:
        raise ValueError(f"--train-on must be all, both, 8k or 4k5, not {train_on!r}")
    other = "4k5" if train_on == "8k" else "8k"
    train_rows = releases[train_on]
    plain_other = bitext.load_release(data_dir, other, slot_augment=False)
    held = bitext.without_texts(plain_other, train_rows)
    files = [
        data_file(paths[train_on], _file_rows(train_rows), "train"),
        data_file(paths[other], len(held), "validation"),
    ]
    return IntentSplit(train_rows, held, "validation", files)


def cross_release_temperature(recipe: IntentRecipe, base_model: str, report: Path | None = None) -> float | None:
    """The temperature ``triage crossval`` pooled over the held-out releases, if it measured this recipe.

    A temperature fitted on texts like the training texts is too low for a release the model has not read
    (the model is surer there than it is right), so a model trained on every release stores this one.
    """
    try:
        summary = json.loads(
            Path(report or CROSSVAL_REPORT or reports_dir() / "crossval" / "crossval.json").read_text()
        )
    except (OSError, ValueError):
        return None
    same_base = Path(str(summary.get("base_model", ""))).name == Path(base_model).name
    if summary.get("recipe") != recipe.as_dict() or not same_base or "pooled_temperature" not in summary:
        return None
    return float(summary["pooled_temperature"])


def own_split(
    path: Path, columns: taxonomy.Columns, policy: Path | None, min_examples: int, seed: int
) -> tuple[IntentSplit, dict[str, str]]:
    """A team's labelled file as a split (validation held out by near-duplicate groups) and its categories; every
    reason it cannot be trained on, or does not fit the routing policy, raises ``TaxonomyError`` first."""
    items = taxonomy.unique(taxonomy.read_labelled(path, columns))
    categories = taxonomy.check(items, taxonomy.load_policy(policy), min_examples)
    train_rows, held = taxonomy.validation_split(items, taxonomy.VALIDATION_SHARE, seed)
    return IntentSplit(train_rows, held, "validation", [data_file(path, len(items), "train")]), categories


def _has_sentences(data_dir: Path, split: str) -> bool:
    """Whether ``data_dir`` holds the GoEmotions and SST-5 ``split`` (a TRIAGE_HOME with only a team's data may not)."""
    return all((Path(data_dir) / name).is_file() for name in (f"goemotions/{split}.tsv", f"sst5/{split}.txt"))


def _labels(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    device: DeviceChoice,
    config: TrainConfig,
    labels: list[str],
) -> list[str]:
    if not texts:
        return []
    return [labels[i] for i in predict_logits(model, tokenizer, texts, device, config.max_length).argmax(axis=1)]


def _reply_library(
    data_dir: Path, output: Path, held_out: list[bitext.Inquiry], predict: Callable[[list[str]], list[str]]
) -> tuple[ReplyFile, dict[str, Any]]:
    """Bitext's 4k5 responses as the artifact's reply library, and how it does on inquiries the model never
    trained on: the held-out 4k5 rows, answered from a library built without them (or any text of their
    template), by the intent the model predicts."""
    rows = replies.bitext_rows(data_dir)
    library = replies.build_library(rows)
    reference = replies.write_library(output, library, replies.BITEXT_SOURCE)
    measured = replies.measure_held_out(rows, [x.text for x in held_out], predict)
    if not measured["held_out"]:
        print(f"intent: reply library of {len(library.templates)} templates (not measured: no held-out split)")
        measured["templates"] = len(library.templates)
    else:
        print(
            f"intent: reply library of {len(library.templates)} templates; on {measured['held_out']} held-out "
            f"inquiries the reply is for the right intent {measured['right_intent']:.1%} of the time, mean "
            f"similarity {measured['mean_confidence']}"
        )
    return reference, measured


def add_corrections(split: IntentSplit, path: Path, categories: dict[str, str]) -> IntentSplit:
    """``split`` with the agents' intent corrections (a `triage feedback collect` dataset) added to training;
    held-out texts that were corrected leave the held-out side, so validation never scores a text trained on."""
    corrections = feedback.intent_corrections(path, categories)
    corrected = {bitext.normalise_key(x.text) for x in corrections}
    held = [x for x in split.held_out if bitext.normalise_key(x.text) not in corrected]
    print(f"intent: {len(corrections)} corrections from {Path(path).name} added to training")
    files = [*split.files, data_file(Path(path), len(corrections), "train")]
    return IntentSplit([*split.train, *corrections], held, split.held_out_role, files)


def train_intent(
    data_dir: Path,
    output: Path,
    base_model: str,
    recipe: IntentRecipe | None = None,
    train_on: str = "all",
    slot_augment: bool = True,
    own: tuple[IntentSplit, dict[str, str]] | None = None,
    with_feedback: Path | None = None,
) -> Manifest:
    """Train, calibrate and save an intent artifact; returns its Manifest. ``own`` (from :func:`own_split`)
    trains on a team's own taxonomy instead of the Bitext releases."""
    recipe, notes = (recipe or default_recipe()).for_data(data_dir, own_taxonomy=own is not None)
    for note in notes:
        print(f"intent: {note}")
    config = recipe.config
    if own is not None:
        split, categories = own
    else:
        split = make_split(data_dir, train_on, slot_augment, config.seed)
        categories = bitext.category_map(split.train + split.held_out)
    if with_feedback is not None:
        split = add_corrections(split, with_feedback, categories)
    outliers, outlier_files = recipe.outliers(data_dir)
    labels = sorted(categories)
    label_id = {label: i for i, label in enumerate(labels)}
    print(
        f"intent: {len(split.train)} training texts, {len(split.held_out)} {split.held_out_role} texts, "
        f"{len(labels)} intents, device {pick_device().description}"
    )
    if recipe.outlier_exposure:
        requests = " and the written requests to other assistants" if recipe.request_outliers else ""
        print(f"intent: outlier exposure on {OUTLIER_ROWS} texts that are not inquiries (GoEmotions, SST-5){requests}")
    model, tokenizer, device, stats = fit_intent(data_dir, split.train, labels, base_model, recipe, outliers=outliers)
    gold = np.array([label_id[x.intent] for x in split.held_out])
    logits = predict_logits(model, tokenizer, [x.text for x in split.held_out], device, config.max_length)
    temperature, source = fit_temperature(logits, gold), f"fitted on the {split.held_out_role} texts"
    if split.held_out_role == "calibration":
        cross = cross_release_temperature(recipe, base_model)
        if cross is not None:
            temperature, source = cross, "pooled over the held-out releases of triage crossval (reports/crossval)"
        else:
            print(
                "intent: no cross-validation of this recipe in reports/crossval: the temperature is fitted on "
                "texts like the training texts, so the model will be over-confident on unseen wording "
                "(run `triage crossval intent` with the same options, then train again)"
            )
    held_probs = softmax(logits, temperature)
    held_metrics = classification_metrics(held_probs, gold, labels)
    scope_texts = out_of_scope_texts(data_dir) if own is None or _has_sentences(data_dir, "test") else []
    scope_probs = (
        softmax(predict_logits(model, tokenizer, scope_texts, device, config.max_length), temperature)
        if scope_texts
        else np.empty((0, len(labels)), dtype=np.float32)
    )
    metrics = {
        split.held_out_role: summary(held_metrics),
        f"{split.held_out_role}_per_class": held_metrics["per_class"],
        "calibration": calibration_report(logits, gold, temperature) | {"temperature_source": source},
        "out_of_scope": {
            "sources": list(OUT_OF_SCOPE_SOURCES),
            "n": len(scope_texts),
            "threshold": ABSTAIN_THRESHOLD,
            "confident_share": confident_share(scope_probs),
            f"{split.held_out_role}_confident_share": confident_share(held_probs),
        },
        "training": stats | {"device": device.description},
    }
    replies_ref = None
    if own is None and (Path(data_dir) / bitext.BITEXT_4K5).is_file():
        replies_ref, metrics["replies"] = _reply_library(
            data_dir, output, split.held_out, lambda texts: _labels(model, tokenizer, texts, device, config, labels)
        )
    hparams = recipe.as_dict() | {
        "train_on": train_on if own is None else "own",
        "slot_augment": slot_augment and own is None,
        "outlier_exposure": (
            OutlierExposure().as_dict() | {"rows": OUTLIER_ROWS, "request_repeats": REQUEST_REPEATS}
            if recipe.outlier_exposure
            else None
        ),
    }
    manifest = save_artifact(
        output,
        model,
        tokenizer,
        {
            "task": "intent",
            "base_model": base_model,
            "labels": labels,
            "categories": categories,
            "temperature": temperature,
            "max_length": config.max_length,
            "data": split.files + outlier_files,
            "hyperparameters": hparams,
            "metrics": metrics,
            "replies": replies_ref,
        },
        probe_texts=random.Random(config.seed).sample([x.text for x in split.held_out], min(1000, len(split.held_out))),
        checks=[AccuracyCheck(split.held_out_role, [x.text for x in split.held_out], gold)],
    )
    print(
        f"intent: {split.held_out_role} accuracy {held_metrics['accuracy']:.4f}, "
        f"T={temperature:.3f} ({source}), saved {output} ({manifest.version})"
    )
    if scope_texts:
        print(
            f"intent: confidence >= {ABSTAIN_THRESHOLD} on {metrics['out_of_scope']['confident_share']:.1%} of "
            f"{len(scope_texts)} texts that are not inquiries, on "
            f"{metrics['out_of_scope'][f'{split.held_out_role}_confident_share']:.1%} "
            f"of the {split.held_out_role} inquiries"
        )
    return manifest


def attach_replies(model_dir: Path, data_dir: Path, own: tuple[Path, taxonomy.Columns, str] | None = None) -> ReplyFile:
    """Build the reply library into an existing intent artifact (Bitext's 4k5 responses, or ``own``: a team's
    file, its columns and its reply column) and record it in the manifest, measured on inquiries the model did not
    train on where its held-out split can be rebuilt (the same data, options and seed), else on a template split."""
    from model.artifacts import read_manifest, write_manifest
    from model.classifier import TextClassifier

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if manifest.task != "intent":
        raise TaxonomyError(f"{model_dir} is a {manifest.task} artifact; replies belong to an intent model")
    hyper = manifest.hyperparameters
    seed = int(hyper.get("seed", INTENT_DEFAULTS.seed))
    if own is None:
        rows = replies.bitext_rows(data_dir)
        source = replies.BITEXT_SOURCE
        train_on = str(hyper.get("train_on", ""))
        held_texts = (
            [x.text for x in make_split(data_dir, train_on, bool(hyper.get("slot_augment", True)), seed).held_out]
            if train_on in ("all", "both")
            else None
        )
    else:
        path, columns, reply_column = own
        rows = taxonomy.read_replies(path, columns, reply_column)
        source = f"{path} ({reply_column})"
        held_texts = None
        if hyper.get("train_on") == "own":
            items = taxonomy.unique(taxonomy.read_labelled(path, columns))
            held_texts = [x.text for x in taxonomy.validation_split(items, taxonomy.VALIDATION_SHARE, seed)[1]]
    unknown = sorted({r.intent for r in rows} - set(manifest.labels))
    if unknown:
        raise TaxonomyError(f"replies for intents the model does not have: {', '.join(unknown)}")
    classifier = TextClassifier.load(model_dir, device="cpu")

    def predict(texts: list[str]) -> list[str]:
        return [classifier.labels[i] for i in classifier.predict_proba(texts).argmax(axis=1)]

    where = (
        "a fifth of the replies' inquiries (the model may have trained on them)"
        if held_texts is None
        else "inquiries the model did not train on"
    )
    measured = replies.measure_held_out(rows, held_texts, predict) | {"measured_on": where}
    reference = replies.write_library(model_dir, replies.build_library(rows), source)
    metrics = dict(manifest.metrics) | {"replies": measured}
    write_manifest(model_dir, manifest.model_copy(update={"replies": reference, "metrics": metrics}))
    return reference
