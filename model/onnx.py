"""Running an artifact's int8 ONNX export (``model.int8.onnx``) with ONNX Runtime on CPU.

:meth:`TextClassifier.load <model.classifier.TextClassifier.load>` runs that file when it is present, matches
the weights beside it (SHA-256 in the manifest's ``onnx`` entry) and ``onnxruntime`` is installed; otherwise
the torch network runs. Making the export is build-time work: :mod:`training.onnx_export`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch

from model.artifacts import OnnxExport, sha256_file
from model.errors import ArtifactError

ONNX_FILE = "model.int8.onnx"
WEIGHTS_FILE = "model.safetensors"

#: texts the export is checked on when the caller gives none (any text does: it compares two networks)
PROBE_TEXTS = (
    "I want a refund for my last order",
    "how do I reset my password?",
    "This is the third time I ask, where is my money?! Unacceptable.",
    "can I talk to a real person",
    "thanks, that solved it",
    "my card was charged twice for the same purchase and nobody answers",
    "where can I see the delivery options",
    "ok",
)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxNetwork:
    """An ONNX Runtime session called like the Hugging Face network: ``network(**inputs).logits``."""

    def __init__(self, model_bytes: bytes, input_names: Sequence[str], threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not service logs
        # Idle worker threads spinning for work would take the CPU librdkafka and the other model need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        missing = [name for name in self.input_names if name not in input_names]
        if missing:
            raise ArtifactError(f"the ONNX model wants inputs {missing} that the tokenizer does not make")

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        feed = {name: inputs[name].numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))


def int8_is_safe_here() -> bool:
    """Whether this CPU has the int8 dot-product instructions (VNNI, AMX) the export was validated with.

    Without them ONNX Runtime's u8 x s8 kernels can saturate intermediate sums, so ``auto`` keeps torch.
    """
    try:
        return bool(torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def load_onnx_network(
    directory: Path, export: OnnxExport, input_names: Sequence[str], threads: int
) -> tuple[OnnxNetwork | None, str | None]:
    """The ONNX network of an artifact, or ``None`` with the reason when it must not be used.

    Used only when the file matches its SHA-256, was made from the weights beside it and loads in ONNX
    Runtime (the classifier then checks one forward pass before it serves).
    """
    path, weights = directory / export.file, directory / WEIGHTS_FILE
    try:
        if not path.is_file():
            return None, f"{export.file} missing"
        if not weights.is_file():
            return None, f"{WEIGHTS_FILE} missing: the export cannot be checked against the weights"
        if sha256_file(weights) != export.source_sha256:
            return None, f"{export.file} was exported from other weights than {WEIGHTS_FILE}"
        data = path.read_bytes()  # read once, checked, then handed over: a file replaced meanwhile cannot slip in
    except OSError as exc:
        return None, f"cannot read {export.file}: {exc.strerror or exc}"
    if hashlib.sha256(data).hexdigest() != export.sha256:
        return None, f"{export.file} does not match its SHA-256 in the manifest"
    try:
        network = OnnxNetwork(data, input_names, threads)
    except ArtifactError as exc:
        return None, str(exc)
    except Exception as exc:  # ONNX Runtime refuses the file: the torch weights can still serve
        return None, f"ONNX Runtime cannot load {export.file}: {type(exc).__name__}: {str(exc)[:200]}"
    return network, None
