"""The artifact's int8 ONNX export and the ONNX Runtime network that runs it on CPU.

``export_onnx(DIR)`` turns the artifact's safetensors network into ``model.int8.onnx`` (ONNX, weights
dynamically quantised to int8 by ONNX Runtime's quantiser) and records it in the manifest's ``onnx``
entry, together with the SHA-256 of the weights it came from and how closely it agrees with them on
probe texts. :meth:`TextClassifier.load <model.classifier.TextClassifier.load>` runs that file with ONNX
Runtime on CPU when it is present, matches the weights beside it, and ``onnxruntime`` is installed;
otherwise the torch network runs. ``training`` exports after each training run; ``triage export-onnx``
does it for artifacts made elsewhere. Export needs ``onnx`` (the ``train`` extra); running needs only
``onnxruntime``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from model.artifacts import OnnxExport, read_manifest, sha256_file, write_manifest
from model.errors import ArtifactError

ONNX_FILE = "model.int8.onnx"
WEIGHTS_FILE = "model.safetensors"
OPSET = 17
QUANTIZATION = "dynamic-int8-per-channel"
#: an export whose argmax agrees with the fp32 network on fewer probe texts is refused (measured: 0.97-1.0 on
#: held-out texts; TweetEval's ambiguous tweets are the hardest case)
MIN_AGREEMENT = 0.95

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


def load_onnx_network(directory: Path, export: OnnxExport, input_names: Sequence[str], threads: int):
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


def export_onnx(directory: str | Path, texts: Sequence[str] = PROBE_TEXTS) -> OnnxExport:
    """Export ``DIR``'s network to int8 ONNX, check it, and record it in the manifest (see :func:`build_onnx`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    export = build_onnx(directory, manifest.max_length, texts)
    if read_manifest(directory).version != manifest.version:
        raise ArtifactError(f"{directory} was replaced while it was being exported; export it again")
    write_manifest(directory, manifest.model_copy(update={"onnx": export}))
    return export


def build_onnx(directory: str | Path, max_length: int, texts: Sequence[str] = PROBE_TEXTS) -> OnnxExport:
    """Write ``DIR/model.int8.onnx`` from ``DIR``'s safetensors network and return its manifest entry.

    The int8 network must agree with the fp32 one on at least :data:`MIN_AGREEMENT` of ``texts``
    (argmax), else :class:`ArtifactError` and nothing is written. The manifest is left to the caller, so an
    artifact being written can get its manifest, export included, in one write.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{weights} not found: only safetensors artifacts can be exported")
    source_sha256 = sha256_file(weights)
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    network = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    example = tokenizer(list(texts[:2]), padding=True, return_tensors="pt")
    example = {name: example[name] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "model.onnx"
        with torch.no_grad(), _quiet():
            torch.onnx.export(
                network,
                (),
                str(float_path),
                kwargs=example,
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**{name: {0: "batch", 1: "tokens"} for name in names}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        partial = Path(tmp) / ONNX_FILE
        with _quiet():
            # Per-channel weight scales: per-tensor ones moved cross-release intent accuracy by 0.6 points,
            # per-channel ones by at most 0.2 (README "Speed work and accuracy").
            quantize_dynamic(str(float_path), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        data = partial.read_bytes()
    agreement, max_diff = _compare(network, tokenizer, names, data, texts, max_length)
    if agreement < MIN_AGREEMENT:
        raise ArtifactError(f"the int8 export agrees with the original on only {agreement:.1%} of "
                            f"{len(texts)} probe texts (at least {MIN_AGREEMENT:.0%} needed); not exported")
    if sha256_file(weights) != source_sha256:
        raise ArtifactError(f"{weights} changed while it was being exported; export it again")
    handle, staged = tempfile.mkstemp(prefix=ONNX_FILE + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staged, directory / ONNX_FILE)  # a running service never sees half a file
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return OnnxExport(
        file=ONNX_FILE,
        sha256=hashlib.sha256(data).hexdigest(),
        source_sha256=source_sha256,
        quantization=QUANTIZATION,
        opset=OPSET,
        probe_texts=len(texts),
        probe_agreement=agreement,
        probe_max_abs_logit_diff=max_diff,
    )


@contextlib.contextmanager
def _quiet():
    """The tracer's and the quantiser's advice is for model authors, not for someone exporting an artifact.

    What it warns about (a shape or branch fixed at trace time) is what :func:`_compare` checks: other
    lengths, batches with padding and single texts must give the original network's answers.
    """
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _compare(network, tokenizer, names, onnx_bytes: bytes, texts: Sequence[str], max_length: int) -> tuple[float, float]:
    """Argmax agreement and the largest logit difference of the int8 ONNX network vs the fp32 torch one."""
    onnx_network = OnnxNetwork(onnx_bytes, names, threads=torch.get_num_threads())
    agree, worst = 0, 0.0
    # batches of 64 (padded to different lengths), then the first texts one at a time (no padding, batch of 1)
    groups = [list(texts[i : i + 64]) for i in range(0, len(texts), 64)] + [[t] for t in texts[:8]]
    for group in groups:
        batch = tokenizer(group, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = {name: batch[name] for name in names}
        with torch.inference_mode():
            expected = network(**batch).logits.float().numpy()
        got = onnx_network(**batch).logits.numpy()
        agree += int((expected.argmax(axis=1) == got.argmax(axis=1)).sum())
        worst = max(worst, float(np.abs(expected - got).max()))
    return round(agree / max(1, sum(map(len, groups))), 6), round(worst, 6)
