"""Writing artifact directories: weights, tokenizer, and the manifest (via model.artifacts)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from model.artifacts import DataFile, Manifest, sha256_file, write_manifest
from training.paths import PROJECT_ROOT


def data_file(path: Path, rows: int | None, role: str) -> DataFile:
    """A DataFile record; the path is relative to the project root when possible."""
    path = Path(path).resolve()
    shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    return DataFile(path=str(shown), sha256=sha256_file(path), rows=rows, role=role)


def version_string(task: str, files: list[DataFile], hyperparameters: dict, now: datetime) -> str:
    """``<task>-<UTC timestamp>-<8 hex of the data and hyper-parameter hash>``."""
    payload = json.dumps(
        {"data": sorted(f.sha256 for f in files), "hparams": hyperparameters}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
    return f"{task}-{now.strftime('%Y%m%dT%H%MZ')}-{digest}"


def save_artifact(directory: Path, model, tokenizer, manifest_fields: dict, probe_texts=None) -> Manifest:
    """Save weights (safetensors), tokenizer and manifest.json into ``directory``, then the int8 ONNX export.

    The export (what CPU inference runs, see :mod:`model.onnx`) is checked against the trained network on
    ``probe_texts`` (held-out texts); without onnx/onnxruntime installed it is skipped with a note and the
    artifact runs on torch.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    now = datetime.now(timezone.utc)
    version = version_string(manifest_fields["task"], manifest_fields["data"], manifest_fields["hyperparameters"], now)
    manifest = Manifest(version=version, created_at=now, **manifest_fields)
    write_manifest(directory, manifest)
    try:
        from model.onnx import PROBE_TEXTS, export_onnx

        export = export_onnx(directory, list(probe_texts or ()) or PROBE_TEXTS)
    except ImportError as exc:
        print(f"{manifest.task}: no ONNX export ({exc.name or exc} not installed); the model runs on torch")
        return manifest
    print(f"{manifest.task}: int8 ONNX export agrees with the trained network on {export.probe_agreement:.1%} of "
          f"{export.probe_texts} held-out texts (max logit difference {export.probe_max_abs_logit_diff:.3f})")
    return manifest.model_copy(update={"onnx": export})
