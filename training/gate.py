"""The promotion gate: a retrained model replaces the serving one only if, on a fixed evaluation set, it is not
worse overall nor on any intent by more than a set margin; then it is copied where the service hot-reloads it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.artifacts import MANIFEST_NAME, read_manifest, write_manifest
from training.errors import TrainingError
from training.evaluate import Scored

#: accuracy and macro-F1 may drop this much (absolute) before the new model is refused
OVERALL_MARGIN = 0.005
#: one intent's F1 may drop this much: per-intent scores move more on small supports
INTENT_MARGIN = 0.03


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reasons: list[str]
    overall: dict[str, dict[str, float]]
    intents: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "reasons": self.reasons, "overall": self.overall, "intents": self.intents}


def compare(old: Scored, new: Scored, margin: float = OVERALL_MARGIN, intent_margin: float = INTENT_MARGIN) -> Verdict:
    """Both models scored on the same texts and gold labels (``score``); refuse on any drop beyond the margins."""
    if old.texts != new.texts:
        raise TrainingError("the two models were not scored on the same texts")
    reasons = []
    overall = {}
    for name in ("accuracy", "macro_f1"):
        before, after = float(old.metrics[name]), float(new.metrics[name])
        overall[name] = {"old": round(before, 4), "new": round(after, 4), "change": round(after - before, 4)}
        if after < before - margin:
            reasons.append(f"{name} {before:.4f} -> {after:.4f} (more than {margin} worse)")
    intents = {}
    gold_labels = {old.labels[i] for i in set(old.gold.tolist())}
    for label in sorted(gold_labels):
        before_class, after_class = old.metrics["per_class"].get(label), new.metrics["per_class"].get(label)
        if before_class is None or after_class is None:
            continue
        before, after = float(before_class["f1"]), float(after_class["f1"])
        intents[label] = {
            "old": round(before, 4),
            "new": round(after, 4),
            "change": round(after - before, 4),
            "support": int(before_class["support"]),
        }
        if after < before - intent_margin:
            reasons.append(f"{label} F1 {before:.4f} -> {after:.4f} (more than {intent_margin} worse)")
    return Verdict(not reasons, reasons, overall, intents)


def promote(new: Path, target: Path) -> None:
    """Copy the artifact ``new`` over ``target`` (the serving model's directory), the manifest last: a service
    watching ``target`` loads the new version once its manifest appears, never a half-copied one."""
    new, target = Path(new), Path(target)
    manifest = read_manifest(new)
    if target.exists() and read_manifest(target).task != manifest.task:
        raise TrainingError(f"{target} holds a {read_manifest(target).task} model, {new} a {manifest.task} model")
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(new.iterdir()):
        if path.name == MANIFEST_NAME or not path.is_file():
            continue
        staged = target / f".{path.name}.promoting"
        shutil.copyfile(path, staged)
        os.replace(staged, target / path.name)
    write_manifest(target, manifest)
