"""What other tools call to train: one function per job, with the shipped recipes as defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.artifacts import Manifest


def train_default(task: str, output: Path, data_dir: Path | None = None, base_model: str | None = None) -> Manifest:
    """Train the ``intent`` or ``sentiment`` model with the shipped recipe into ``output``; returns its manifest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the base encoders ship in wheels; nothing is downloaded
    from training.paths import data_dir as default_data_dir
    from training.paths import default_base_model

    data_dir = Path(data_dir or default_data_dir())
    base_model = base_model or default_base_model()
    if task == "intent":
        from training.intent import train_intent

        return train_intent(data_dir, Path(output), base_model)
    if task == "sentiment":
        from training.sentiment import train_sentiment

        return train_sentiment(data_dir, Path(output), base_model)
    raise ValueError(f"unknown task {task!r}: intent or sentiment")
