"""The CLI module stays light and its defaults need no arguments."""

import subprocess
import sys

from training.cli import build_parser
from training.engine import TrainConfig


def test_cli_imports_no_torch():
    code = "import sys, training.cli; print(any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_defaults_match_recipes():
    from training.intent import INTENT_DEFAULTS
    from training.sentiment import SENTIMENT_DEFAULTS

    for task, recipe in (("intent", INTENT_DEFAULTS), ("sentiment", SENTIMENT_DEFAULTS)):
        args = build_parser().parse_args(["train", task])
        parsed = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             max_length=args.max_length, seed=args.seed, freeze_layers=args.freeze_layers)
        assert parsed == recipe
        assert args.output.name == task and args.data_dir.name == "data"
