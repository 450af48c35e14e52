"""Batch-first text classification over one artifact directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from model.artifacts import Manifest, read_manifest
from model.errors import ArtifactError, InferenceError


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    autocast_dtype: torch.dtype | None

    @property
    def description(self) -> str:
        dtype = str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "float32"
        return f"{self.device.type}/{dtype}"


def choose_device(preference: str = "auto") -> DeviceChoice:
    """CUDA when present (fp16/bf16 autocast), bf16 autocast on AVX-512/AMX CPUs, else fp32.

    ``preference`` is ``auto``, ``cpu`` or ``cuda``; ``TRIAGE_DISABLE_BF16=1`` forces fp32 on CPU.
    """
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {preference!r}")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InferenceError("device=cuda requested but CUDA is not available")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(torch.device("cuda"), dtype)
    capability = torch.backends.cpu.get_cpu_capability()
    bf16 = capability.startswith("AVX512") or "AMX" in capability
    if os.environ.get("TRIAGE_DISABLE_BF16") == "1":
        bf16 = False
    return DeviceChoice(torch.device("cpu"), torch.bfloat16 if bf16 else None)


class TextClassifier:
    """A sequence classifier and its tokenizer, loaded from an artifact directory."""

    def __init__(self, directory: Path, manifest: Manifest, tokenizer, network, device: DeviceChoice):
        self.directory = directory
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.network = network
        self.device = device
        self.labels: list[str] = list(manifest.labels)
        self.max_length = min(manifest.max_length, _tokenizer_limit(tokenizer))

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> TextClassifier:
        directory = Path(directory)
        manifest = read_manifest(directory)
        hf_logging.disable_progress_bar()  # no progress bars in service logs
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            network = AutoModelForSequenceClassification.from_pretrained(directory)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot load the model in {directory}: {exc}") from exc
        id2label = {int(k): v for k, v in network.config.id2label.items()}
        if [id2label.get(i) for i in range(len(manifest.labels))] != manifest.labels:
            raise ArtifactError(
                f"{directory}: config id2label {id2label} does not match manifest labels {manifest.labels}"
            )
        choice = choose_device(device)
        network.to(choice.device).eval()
        return cls(directory, manifest, tokenizer, network, choice)

    @property
    def version(self) -> str:
        return self.manifest.version

    def _autocast(self):
        if self.device.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.device.type, dtype=self.device.autocast_dtype)

    def _batches(self, texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
        # Sort by length so each batch pads to similar lengths; results go back in input order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Raw logits, float32, shape (len(texts), len(labels)), in input order."""
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        with torch.inference_mode(), self._autocast():
            for index in self._batches(texts, batch_size):
                encoded = self.tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device.device)
                out[index] = self.network(**encoded).logits.float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Calibrated probabilities: softmax(logits / manifest.temperature)."""
        return softmax(self.logits(texts, batch_size) / self.manifest.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _tokenizer_limit(tokenizer) -> int:
    limit = getattr(tokenizer, "model_max_length", None) or 512
    return int(limit) if limit < 100_000 else 512
