"""The CLI module stays light and its defaults need no arguments."""

import subprocess
import sys

from training.engine import TrainConfig
from triage.cli import build_parser


def test_cli_imports_no_torch():
    code = "import sys, triage.cli; print(any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_defaults_match_recipes():
    from training.intent import INTENT_DEFAULTS
    from training.sentiment import SENTIMENT_DEFAULTS

    for task, recipe in (("intent", INTENT_DEFAULTS), ("sentiment", SENTIMENT_DEFAULTS)):
        args = build_parser().parse_args(["train", task])
        parsed = TrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            max_length=args.max_length,
            seed=args.seed,
            freeze_layers=args.freeze_layers,
            label_smoothing=args.label_smoothing,
            schedule=args.schedule,
        )
        assert parsed == recipe
        assert args.output.name == task and args.data_dir.name == "data"


def test_the_intent_recipe_of_the_cli_is_the_cross_validated_default():
    from training.intent import default_recipe
    from triage.training_commands import _config, _intent_recipe

    for command in (["train", "intent"], ["crossval", "intent"]):
        args = build_parser().parse_args(command)
        assert _intent_recipe(args, _config(args, command[0])) == default_recipe()
    args = build_parser().parse_args(["train", "intent", "--no-augment", "--no-outlier-exposure"])
    recipe = _intent_recipe(args, _config(args, "train"))
    assert recipe.augmentation is None and not recipe.outlier_exposure


def test_evaluate_names_what_is_wrong_with_a_csv(tmp_path):
    import pytest

    from training.evaluate import EvaluationError, read_labelled_csv

    cases = {
        "empty.csv": (b"", "is empty"),
        "short.csv": (b"text,label\nhello,neutral\nno label here\n", "line 3: 1 field where the header has 2"),
        "long.csv": (b"text,label\nhello, there,neutral\n", "line 2: 3 fields where the header has 2"),
        "latin1.csv": (
            b"text,label\nfine,neutral\ncaf\xe9,neutral\n",
            "is not UTF-8 text (invalid continuation byte at byte 27, line 3)",
        ),
        "quoted.csv": (b'text,label\n"two\nlines",neutral\n"unclosed,neutral\nx,y\n', "line 4: 1 field"),
        "blank.csv": (b"\n\n", "is empty"),
        "twice.csv": (b"text,text,label\na,b,neutral\n", "appear more than once"),
        "columns.csv": (b"message,gold\nhi,neutral\n", "missing column(s) ['text', 'label']"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EvaluationError) as info:
            read_labelled_csv(tmp_path / name, "text", "label")
        assert expected in str(info.value), name
    with pytest.raises(EvaluationError, match="is a directory"):
        read_labelled_csv(tmp_path, "text", "label")
    (tmp_path / "good.csv").write_bytes(b'\xef\xbb\xbftext,label\n"hello, there",neutral \n')
    assert read_labelled_csv(tmp_path / "good.csv", "text", "label") == (["hello, there"], ["neutral"])


def test_evaluate_options_are_checked_before_any_model_loads(tmp_path, capsys):
    import pytest

    from triage.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "intent", "--data", "x.csv", "--batch-size", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["evaluate", "intent", "--data", "x.csv", "--report", str(tmp_path / "a-file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_help_shows_defaults_once():
    parser = build_parser()
    for argv in (["evaluate", "intent", "--help"], ["train", "intent", "--help"]):
        text = _help_of(parser, argv)
        assert "(default: None)" not in text and "(default: True)" not in text and "(default: False)" not in text
    assert "(default: 13)" in _help_of(parser, ["train", "intent", "--help"])


def _help_of(parser, argv) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parser.parse_args(argv)
    return out.getvalue()


def test_training_writes_under_triage_home_not_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path))
    for command, attribute, expected in (
        (["train", "intent"], "output", tmp_path / "artifacts" / "intent"),
        (["train", "sentiment"], "data_dir", tmp_path / "data"),
        (["crossval", "intent"], "out", tmp_path / "reports" / "crossval"),
        (["evaluate", "sentiment", "--data", "x.csv"], "model", tmp_path / "artifacts" / "sentiment"),
    ):
        assert getattr(build_parser().parse_args(command), attribute) == expected


def test_sentiment_training_reads_emoji_as_words_unless_told_not_to(monkeypatch, tmp_path):
    from training import sentiment
    from triage.training_commands import run_train

    calls = []
    monkeypatch.setattr(sentiment, "train_sentiment", lambda *a, **kw: calls.append(kw["text_steps"]))
    base = ["--base-model", str(tmp_path), "--data-dir", str(tmp_path)]
    for flag in ([], ["--no-emoji-words"]):
        assert run_train(build_parser().parse_args(["train", "sentiment", *base, *flag])) == 0
    assert calls == [("emoji_words",), ()]
