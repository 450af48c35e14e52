"""Batch-first text classification over one artifact directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from model.artifacts import Manifest, read_manifest
from model.errors import ArtifactError, InferenceError
from model.text import prepare

if TYPE_CHECKING:
    from model.onnx import OnnxNetwork

BACKENDS = ("auto", "torch", "onnx")

#: On CPU a forward pass costs about as much as this many more padded tokens in it. Fitted on the int8 MiniLM
#: exports, one thread, passes of 1 to 32 texts of one length on 2 AMD EPYC cores: about 1.0 ms a pass and
#: 0.073 ms a token for the intent model, 1.3 ms and 0.096 ms for the sentiment model (14 tokens each).
#: The torch path on CPU (no export, or no VNNI/AMX) uses it too; it was not fitted there.
CPU_PASS_COST_TOKENS = 14

FloatT = TypeVar("FloatT", bound=np.floating[Any])


def plan_passes(lengths: Sequence[int], max_texts: int, pass_cost_tokens: float = 0) -> list[npt.NDArray[np.intp]]:
    """Positions per forward pass, sorted by token count, at most ``max_texts`` a pass, shortest pass first.

    With ``pass_cost_tokens`` 0, consecutive runs of ``max_texts`` (one pass per batch where it is the
    batch size, as on a GPU). Above 0, the cut that costs the fewest padded tokens plus ``pass_cost_tokens``
    a pass (dynamic programming over the sorted lengths): a cut falls where the padding that the longer texts
    would add to all the shorter ones in their pass costs more than another pass. Ties go to the fewer passes.
    """
    tokens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(tokens, kind="stable")
    n, max_texts = len(order), max(1, int(max_texts))
    if pass_cost_tokens <= 0 or n <= 1:
        return [order[start : start + max_texts] for start in range(0, n, max_texts)]
    width = tokens[order].astype(np.float64)
    best = np.zeros(n + 1)  # best[j]: the cheapest plan for the j shortest texts
    start = np.zeros(n + 1, dtype=np.int64)  # where the last pass of that plan starts
    for j in range(1, n + 1):
        first = max(0, j - max_texts)
        cost = best[first:j] + pass_cost_tokens + (j - np.arange(first, j)) * width[j - 1]
        k = int(np.argmin(cost))  # the first minimum: the longest pass among equals
        best[j], start[j] = cost[k], first + k
    passes: list[npt.NDArray[np.intp]] = []
    j = n
    while j > 0:
        passes.append(order[start[j] : j])
        j = start[j]
    return passes[::-1]


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    autocast_dtype: torch.dtype | None

    @property
    def description(self) -> str:
        dtype = str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "float32"
        return f"{self.device.type}/{dtype}"


def choose_device(preference: str = "auto", bf16: bool = True) -> DeviceChoice:
    """CUDA when present (fp16/bf16 autocast), bf16 autocast on CPUs that compute bf16 natively, else fp32.

    ``preference`` is ``auto``, ``cpu`` or ``cuda``; ``TRIAGE_DISABLE_BF16=1`` forces fp32 on CPU.
    """
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {preference!r}")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InferenceError("device=cuda requested but CUDA is not available")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(torch.device("cuda"), dtype)
    # bf16=False (Settings.cpu_bf16) keeps float32 where bf16 would be chosen
    use_bf16 = bf16 and native_cpu_bf16()
    return DeviceChoice(torch.device("cpu"), torch.bfloat16 if use_bf16 else None)


def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX). AVX-512 alone is not enough: without them
    oneDNN emulates bf16, and a MiniLM training step measured 3x slower than in float32 (0.82 s against 0.27 s
    on an Ice Lake Xeon), inference likewise."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


@dataclass(frozen=True)
class CpuPlan:
    """How CPU inference uses the cores: torch intra-op threads, and whether the two models run side by side."""

    threads: int
    parallel_models: bool


def cpu_plan(threads: int | None = None, parallel_models: bool | None = None) -> CpuPlan:
    """How the service process uses its cores on CPU; sets torch's thread count to match.

    Called when a :class:`~model.TriageModel` is built on CPU, not by :class:`TextClassifier` alone (evaluating
    one model keeps torch's defaults). Unset, the two models run side by side on two or more cores, each with
    half of them (measured with ``triage bench``); Settings.torch_threads and Settings.parallel_models override.
    """
    cores = _PROCESS_CORES
    parallel = cores >= 2 if parallel_models is None else parallel_models
    wanted = threads or (max(1, cores // 2) if parallel else cores)
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    return CpuPlan(threads=torch.get_num_threads(), parallel_models=parallel)


#: the cores this process may use (torch's default thread count), read before any plan changes it
_PROCESS_CORES = torch.get_num_threads()


class TextClassifier:
    """A sequence classifier and its tokenizer, loaded from an artifact directory."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        tokenizer: PreTrainedTokenizerBase,
        network: torch.nn.Module | OnnxNetwork,
        device: DeviceChoice,
    ):
        self.directory = directory
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.network = network
        self.device = device
        self.labels: list[str] = list(manifest.labels)
        self.max_length = min(manifest.max_length, _tokenizer_limit(tokenizer))
        self.text_steps = list(manifest.text_steps)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._input_names = set(getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask")))
        self.backend = "torch"  # or "onnx-int8"
        # where a pass is cut (plan_passes): on CPU, by padding against a pass's cost; elsewhere, every max texts
        self.pass_cost_tokens = CPU_PASS_COST_TOKENS if device.device.type == "cpu" else 0
        self.backend_note: str | None = None  # why ONNX is not used, when it is not

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str = "auto",
        backend: str = "auto",
        threads: int | None = None,
        bf16: bool = True,
    ) -> TextClassifier:
        """Load an artifact directory.

        ``backend``: ``torch`` runs the safetensors network; ``onnx`` runs the artifact's int8 ONNX export
        with ONNX Runtime (CPU only; an error if it cannot); ``auto`` (default) runs ONNX on CPU where the
        artifact has a valid export and onnxruntime is installed, else torch (:attr:`backend_note` says why).
        ``threads`` is ONNX Runtime's intra-op thread count (default: torch's).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        directory = Path(directory)
        manifest = read_manifest(directory)
        # no progress bars in service logs; transformers leaves this function unannotated
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            config = AutoConfig.from_pretrained(directory)
        except Exception as exc:  # OSError, ValueError, a tokenizer file that does not parse...
            raise ArtifactError(f"cannot load the tokenizer or config in {directory}: {exc}") from exc
        _check_vocabulary(directory, len(tokenizer), getattr(config, "vocab_size", None))
        id2label = {int(k): v for k, v in config.id2label.items()}
        if [id2label.get(i) for i in range(len(manifest.labels))] != manifest.labels:
            raise ArtifactError(
                f"{directory}: config id2label {id2label} does not match manifest labels {manifest.labels}"
            )
        choice = choose_device(device, bf16)
        onnx_network: OnnxNetwork | None = None
        note: str | None = None
        if backend != "torch":
            onnx_network, note = _onnx_network(directory, manifest, choice, tokenizer, threads)
            if onnx_network is None and backend == "onnx":
                raise ArtifactError(f"{directory}: cannot run the ONNX backend: {note}")
        if onnx_network is not None:
            classifier = cls(directory, manifest, tokenizer, onnx_network, choice)
            classifier.backend = "onnx-int8"
            return classifier
        try:
            network: torch.nn.Module = AutoModelForSequenceClassification.from_pretrained(directory)
        except Exception as exc:  # OSError, ValueError, SafetensorError (a truncated or damaged weights file)...
            raise ArtifactError(f"cannot load the model in {directory}: {type(exc).__name__}: {exc}") from exc
        _detach_from_files(network)
        network.to(choice.device).eval()
        if choice.device.type == "cpu" and choice.autocast_dtype is not None:
            _cast_linear_weights(network, choice.autocast_dtype)
        classifier = cls(directory, manifest, tokenizer, network, choice)
        classifier.backend_note = note if choice.device.type == "cpu" else None  # a GPU never wants the export
        return classifier

    @property
    def runtime(self) -> str:
        """Where and how the network runs, e.g. ``cpu/onnx-int8`` or ``cpu/bfloat16``."""
        return f"cpu/{self.backend}" if self.backend != "torch" else self.device.description

    @property
    def version(self) -> str:
        return self.manifest.version

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.device.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.device.type, dtype=self.device.autocast_dtype)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text after the artifact's text steps (special tokens added, truncated to
        ``max_length``), unpadded.

        One call of the fast tokenizer for the whole batch; padding happens per sub-batch in
        :meth:`logits_from_ids`, after sorting by token count.
        """
        return self._tokenize(prepare(texts, self.text_steps))

    def encode_like(self, texts: Sequence[str], other: TextClassifier, other_ids: list[list[int]]) -> list[list[int]]:
        """:meth:`encode` of ``texts``, given ``other``'s ids for them from the same tokenizer (equal
        :attr:`tokenizer_signature`): only texts the two classifiers' text steps leave different are tokenized
        again; ``other_ids`` itself comes back when there are none."""
        mine = prepare(texts, self.text_steps)
        theirs = mine if other.text_steps == self.text_steps else prepare(texts, other.text_steps)
        changed = [i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
        if not changed:
            return other_ids
        out = list(other_ids)
        for i, ids in zip(changed, self._tokenize([mine[i] for i in changed])):
            out[i] = ids
        return out

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        ids: list[list[int]] = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return ids

    @cached_property
    def tokenizer_signature(self) -> str | None:
        """A hash of everything that decides the token ids this classifier's tokenizer gives a text.

        Two classifiers with the same signature turn every text into the same ids, so one tokenization
        can serve both (see :meth:`TriageModel.predict`; :meth:`encode_like` where their text steps differ).
        ``None`` when it cannot be established.
        """
        return _tokenizer_signature(self.tokenizer, self.max_length)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        """Raw logits, float32, shape (len(texts), len(labels)), in input order."""
        if not len(texts):
            return np.empty((0, len(self.labels)), dtype=np.float32)
        return self.logits_from_ids(self.encode(texts), batch_size)

    def logits_from_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64) -> npt.NDArray[np.float32]:
        """Logits of already tokenized texts (:meth:`encode`), in input order."""
        out = np.empty((len(ids), len(self.labels)), dtype=np.float32)
        for index in self.passes(ids, batch_size):
            self.run_pass(ids, index, out)
        return out

    def passes(self, ids: Sequence[Sequence[int]], batch_size: int) -> list[npt.NDArray[np.intp]]:
        """Positions of ``ids`` per forward pass, at most ``batch_size`` each (:func:`plan_passes`)."""
        return plan_passes([len(x) for x in ids], batch_size, self.pass_cost_tokens)

    def run_pass(self, ids: Sequence[Sequence[int]], index: npt.NDArray[np.intp], out: npt.NDArray[np.float32]) -> None:
        """One forward pass over ``ids[index]``; the logits go to ``out[index]`` (input order is kept)."""
        with torch.inference_mode(), self._autocast():
            inputs = self._pad([ids[i] for i in index], max(len(ids[i]) for i in index))
            out[index] = self.network(**inputs).logits.float().cpu().numpy()

    def _pad(self, ids: list[Sequence[int]], width: int) -> dict[str, torch.Tensor]:
        """The tensors ``tokenizer(..., padding=True, return_tensors="pt")`` would give for these ids."""
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for row, seq in enumerate(ids):
            if left:
                input_ids[row, width - len(seq) :] = seq
                mask[row, width - len(seq) :] = 1
            else:
                input_ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
        device = self.device.device
        inputs = {
            "input_ids": torch.from_numpy(input_ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }
        if "token_type_ids" in self._input_names:  # one sequence per text: all zeros, as the tokenizer gives
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        return inputs

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        """Calibrated probabilities: softmax(logits / manifest.temperature)."""
        return self.proba_from_logits(self.logits(texts, batch_size))

    def proba_from_logits(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return softmax(logits, self.manifest.temperature)


def _check_vocabulary(directory: Path, tokens: int, embeddings: int | None) -> None:
    """A tokenizer that does not fit the network turns text into the wrong ids, or into [UNK]s, without an error."""
    if embeddings and not embeddings // 2 <= tokens <= embeddings:
        raise ArtifactError(
            f"{directory}: the tokenizer has {tokens} tokens and the network {embeddings} embeddings; "
            "a tokenizer file is missing or belongs to another model"
        )


def softmax(logits: npt.NDArray[FloatT], temperature: float = 1.0) -> npt.NDArray[FloatT]:
    """softmax(logits / temperature) over the last axis, in the logits' float type."""
    scaled = logits / temperature if temperature != 1.0 else logits
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: npt.NDArray[FloatT] = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def _cast_linear_weights(network: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store the weights of Linear layers in the autocast dtype, once, and pre-pack them for oneDNN.

    Under CPU autocast every ``linear`` casts its weight (and bias) to bf16 on each call anyway; with the
    cast done at load time the results are bit-identical and each batch skips those copies. Everything
    else (embeddings, LayerNorm, the classifier head's inputs) stays as it was and autocast handles it.
    Where this torch build can, the bf16 weights are also reordered once into oneDNN's blocked layout
    (what inductor's freezing does), checked to give the same numbers, else left as plain Linear.
    """
    for module in network.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)
    if dtype is not torch.bfloat16:
        return
    for module in list(network.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                packed = _PackedLinear.wrap(child)
                if packed is not None:
                    setattr(module, child_name, packed)


class _PackedLinear(torch.nn.Module):
    """A bf16 Linear whose weight oneDNN reordered once, at load; same results as autocast ``linear``."""

    def __init__(self, linear: torch.nn.Linear, packed: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # kept for state_dict / introspection; the packed copy is what runs
        self.bias = linear.bias
        self.register_buffer("packed_weight", packed, persistent=False)

    @classmethod
    def wrap(cls, linear: torch.nn.Linear) -> _PackedLinear | None:
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
            candidate = cls(linear, packed)
            probe = torch.randn(5, 7, linear.in_features, dtype=torch.bfloat16)
            with torch.inference_mode():
                expected = torch.nn.functional.linear(probe, linear.weight, linear.bias)
                if not torch.equal(candidate(probe), expected):
                    return None
        except (AttributeError, RuntimeError, TypeError):  # not available in this build / on this CPU
            return None
        return candidate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")
        return out.reshape(*shape[:-1], self.out_features)


def _onnx_network(
    directory: Path, manifest: Manifest, choice: DeviceChoice, tokenizer: PreTrainedTokenizerBase, threads: int | None
) -> tuple[OnnxNetwork | None, str | None]:
    """(ONNX network, None) when the artifact's int8 export can run here, else (None, the reason)."""
    from model.onnx import (
        PROBE_TEXTS,
        int8_is_safe_here,
        load_onnx_network,
        onnx_available,
    )

    if choice.device.type != "cpu":
        return None, f"ONNX runs on CPU; the device is {choice.device.type}"
    if manifest.onnx is None:
        return None, "the artifact has no ONNX export (`triage export-onnx`)"
    if not onnx_available():
        return None, "onnxruntime is not installed"
    if not int8_is_safe_here():
        return None, "this CPU has no VNNI/AMX int8 instructions, on which the export was validated"
    names = getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask"))
    network, note = load_onnx_network(directory, manifest.onnx, names, threads or torch.get_num_threads())
    if network is None:
        return None, note
    try:  # one forward pass before it serves: right shape, finite scores
        inputs = tokenizer(
            list(PROBE_TEXTS[:2]), padding=True, truncation=True, max_length=manifest.max_length, return_tensors="pt"
        )
        logits = network(**{name: inputs[name] for name in network.input_names}).logits
        if tuple(logits.shape) != (2, len(manifest.labels)) or not torch.isfinite(logits).all():
            return None, f"the ONNX export gave logits of shape {tuple(logits.shape)} or non-finite ones"
    except Exception as exc:  # any failure here means: serve with torch
        return None, f"the ONNX export failed its check: {type(exc).__name__}"
    return network, None


def _tokenizer_signature(tokenizer: PreTrainedTokenizerBase, max_length: int) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # slow tokenizer: no serialized form to compare, do not share
        return None
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    spec = json.loads(backend.to_str())  # vocab, normalizer, pre-tokenizer, post-processor, decoder...
    spec.pop("truncation", None)  # ...less the runtime padding/truncation state: encode() sets both per call
    spec.pop("padding", None)
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update(
        repr(
            (
                max_length,
                tokenizer.padding_side,
                tokenizer.pad_token_id,
                sorted(getattr(tokenizer, "model_input_names", [])),
            )
        ).encode()
    )
    return digest.hexdigest()


def _tokenizer_limit(tokenizer: PreTrainedTokenizerBase) -> int:
    limit = getattr(tokenizer, "model_max_length", None) or 512
    return int(limit) if limit < 100_000 else 512


def _detach_from_files(network: torch.nn.Module) -> None:
    """Copy weights that safetensors memory-mapped into private memory: a new artifact written over the
    same files while the service runs (hot reload) must not change, or crash, the model in use."""
    with torch.no_grad():
        for tensor in list(network.parameters()) + list(network.buffers()):
            tensor.data = tensor.data.clone()
