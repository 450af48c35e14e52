"""Writing artifact directories: weights, tokenizer, and the manifest (via model.artifacts)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model.artifacts import DataFile, Manifest, sha256_file, write_manifest
from training.paths import home

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from training.onnx_export import AccuracyCheck

#: what a data file was used for: the roles :class:`model.artifacts.DataFile` accepts
DataRole = Literal["train", "validation", "calibration", "test", "outliers"]


def data_file(path: Path, rows: int | None, role: DataRole) -> DataFile:
    """A DataFile record; the path is relative to the project root when possible."""
    path = Path(path).resolve()
    root = home().resolve()
    shown = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
    return DataFile(path=str(shown), sha256=sha256_file(path), rows=rows, role=role)


def version_string(task: str, files: list[DataFile], hyperparameters: dict[str, Any], now: datetime) -> str:
    """``<task>-<UTC timestamp>-<8 hex of the data and hyper-parameter hash>``."""
    payload = json.dumps(
        {"data": sorted(f.sha256 for f in files), "hparams": hyperparameters}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
    return f"{task}-{now.strftime('%Y%m%dT%H%MZ')}-{digest}"


def save_artifact(
    directory: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    manifest_fields: dict[str, Any],
    probe_texts: Sequence[str] | None = None,
    checks: Sequence[AccuracyCheck] = (),
) -> Manifest:
    """Save weights (safetensors), tokenizer, the int8 ONNX export and, last, manifest.json into ``directory``.

    The export (what CPU inference runs, see :mod:`model.onnx`) is checked against the trained network on
    ``probe_texts`` (held-out texts) and must keep the float32 network's accuracy on ``checks`` (labelled
    validation sets, :class:`training.onnx_export.AccuracyCheck`). If it cannot be made (onnx/onnxruntime missing, or
    it disagrees with the network) the artifact is saved without it and runs on torch. The manifest is written once,
    export
    included, so a service hot-reloading this directory loads the new version with its export.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    now = datetime.now(UTC)
    version = version_string(manifest_fields["task"], manifest_fields["data"], manifest_fields["hyperparameters"], now)
    task = manifest_fields["task"]
    export = None
    try:
        from model.onnx import PROBE_TEXTS
        from training.onnx_export import build_onnx

        export = build_onnx(
            directory, manifest_fields.get("max_length", 128), list(probe_texts or ()) or PROBE_TEXTS, checks
        )
    except ImportError as exc:
        print(f"{task}: no ONNX export ({exc.name or exc} not installed); the model runs on torch")
    except Exception as exc:  # the artifact is still good: it runs on torch
        print(f"{task}: no ONNX export ({type(exc).__name__}: {exc}); the model runs on torch")
    else:
        print(
            f"{task}: int8 ONNX export agrees with the trained network on {export.probe_agreement:.1%} of "
            f"{export.probe_texts} held-out texts (max logit difference {export.probe_max_abs_logit_diff:.3f}); "
            f"feed-forward MatMuls kept in float: {', '.join(export.float_matmuls) or 'none'}"
        )
        for refusal in export.refused:
            print(f"{task}: not kept: {refusal}")
        for name, check in export.accuracy_checks.items():
            print(
                f"{task}: int8 accuracy on {name}: {check['int8']:.4f} (float32 {check['reference']:.4f}, "
                f"{check['change']:+.2f} points; macro-F1 {check['macro_f1_change']:+.2f})"
            )
    manifest = Manifest(version=version, created_at=now, onnx=export, **manifest_fields)
    write_manifest(directory, manifest)
    return manifest
