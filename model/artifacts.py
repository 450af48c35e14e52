"""The one artifact format of inquiry-triage, owned here.

An artifact directory is a Hugging Face ``save_pretrained`` directory (config, safetensors weights,
tokenizer files) that ``transformers.pipeline("text-classification", model=DIR)`` can load, plus
``manifest.json`` described by :class:`Manifest`. ``training`` writes artifacts with
:func:`write_manifest`; ``model`` reads them with :func:`read_manifest`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.errors import ArtifactError
from model.text import TextStep

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")

Task = Literal["intent", "sentiment"]


class DataFile(BaseModel):
    """A data file an artifact was trained or validated on."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int | None = None
    role: Literal["train", "validation", "calibration", "test", "outliers"] = "train"


def matmul_name(layer: int, part: str) -> str:
    """How ``OnnxExport.float_matmuls`` names a feed-forward MatMul: ``"0.down"``, ``"0.up"`` (layer 0 first)."""
    return f"{layer}.{part}"


class OnnxExport(BaseModel):
    """The artifact's int8 ONNX export (see :mod:`model.onnx`), run by ONNX Runtime on CPU."""

    model_config = ConfigDict(frozen=True)

    file: str
    sha256: str
    #: SHA-256 of the safetensors weights it was exported from: other weights beside it make it stale
    source_sha256: str
    quantization: str
    opset: int
    #: how closely it followed the fp32 torch network on probe texts at export time
    probe_texts: int = 0
    probe_agreement: float | None = None
    probe_max_abs_logit_diff: float | None = None
    #: feed-forward MatMuls left in float32 ("0.down": layer 0's down-projection, "0.up" its up-projection), the
    #: rest int8: the export takes the fewest that keep accuracy on the labelled check sets
    #: (see :func:`training.onnx_export.build_onnx`)
    float_matmuls: tuple[str, ...] = ()
    #: older exports: encoder layers whose whole feed-forward block stayed float32 (read, no longer written)
    float_feed_forward_layers: tuple[int, ...] = Field(default=(), exclude=True)
    #: name -> n, the float32 network's accuracy, the export's, the change and the macro-F1 change in points
    accuracy_checks: dict[str, dict[str, int | float]] = Field(default_factory=dict)
    #: the faster variants tried first and why each was not kept
    refused: tuple[str, ...] = ()

    def kept_in_float(self) -> tuple[str, ...]:
        """The MatMuls in float32, in ``float_matmuls``' terms whichever way the manifest recorded them."""
        older = tuple(matmul_name(index, part) for index in self.float_feed_forward_layers for part in ("down", "up"))
        return tuple(dict.fromkeys(self.float_matmuls + older))


class ReplyFile(BaseModel):
    """The artifact's reply library (:mod:`model.replies`): suggested replies for automatable intents."""

    model_config = ConfigDict(frozen=True)

    file: str
    sha256: str
    version: str
    templates: int = Field(ge=1)
    #: where the replies came from: a data file's path and its reply column
    source: str = ""


class Manifest(BaseModel):
    """What a trained model is, where it came from and how well it did."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format_version: int = FORMAT_VERSION
    task: Task
    version: str = Field(min_length=1)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    base_model: str
    labels: list[str] = Field(min_length=2)
    #: intent label -> category (intent artifacts only)
    categories: dict[str, str] = Field(default_factory=dict)
    #: logits are divided by this before the softmax (temperature scaling, fitted on held-out data never trained on)
    temperature: float = Field(default=1.0, gt=0)
    max_length: int = Field(default=128, gt=0)
    #: what each text goes through before the tokenizer, in training and in service (:mod:`model.text`)
    text_steps: list[TextStep] = Field(default_factory=list)
    data: list[DataFile] = Field(default_factory=list)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    #: the int8 ONNX export CPU inference runs when present (``triage export-onnx``)
    onnx: OnnxExport | None = None
    #: intent artifacts: the reply library beside the weights, if one was built
    replies: ReplyFile | None = None

    @model_validator(mode="after")
    def _check_labels(self) -> Manifest:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.task == "intent":
            missing = [label for label in self.labels if label not in self.categories]
            if missing:
                raise ValueError(f"intents without a category: {missing}")
        if self.task == "sentiment" and set(self.labels) != set(SENTIMENT_LABELS):
            raise ValueError(f"sentiment labels must be {list(SENTIMENT_LABELS)}, got {self.labels}")
        return self


def read_manifest(directory: str | Path) -> Manifest:
    """Read and validate ``DIR/manifest.json``; raise :class:`ArtifactError` with the reason."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path} not found: train a model first (`triage train ...`)")
    try:
        return Manifest.model_validate(orjson.loads(path.read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not a valid manifest (not JSON: {exc})") from exc
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors(include_url=False)]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ArtifactError(f"{path} is not a valid manifest: {'; '.join(problems[:3])}{more}") from exc


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    tmp.replace(path)
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_artifact(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST_NAME).is_file()
