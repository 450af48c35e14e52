"""Making an artifact's int8 ONNX export (build time; the service only runs it, see :mod:`model.onnx`).

``export_onnx(DIR)`` turns the artifact's safetensors network into ``model.int8.onnx`` (ONNX, weights
dynamically quantised to int8 by ONNX Runtime's quantiser, some of the first layers' feed-forward MatMuls left in
float32 where int8 would move accuracy, see :func:`build_onnx`) and records it in the manifest's ``onnx``
entry, together with the SHA-256 of the weights it came from and how closely it agrees with them on
probe texts. Training exports after each run; ``triage export-onnx`` does it for artifacts made elsewhere.
Export needs ``onnx`` (the ``train`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from model.artifacts import (
    OnnxExport,
    matmul_name,
    read_manifest,
    sha256_file,
    write_manifest,
)
from model.classifier import CPU_PASS_COST_TOKENS, plan_passes
from model.errors import ArtifactError
from model.onnx import ONNX_FILE, PROBE_TEXTS, WEIGHTS_FILE, OnnxNetwork
from model.predictor import DEFAULT_CPU_PASS

if TYPE_CHECKING:
    from onnx import ModelProto
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

OPSET = 17
QUANTIZATION = "dynamic-int8-per-channel"
#: an export whose argmax agrees with the fp32 network on fewer probe texts is refused (measured: 0.97-1.0 on
#: held-out texts; TweetEval's ambiguous tweets are the hardest case)
MIN_AGREEMENT = 0.95
#: the export's accuracy on each labelled check set may move by at most this many points from the float32
#: network's (the product promises 0.5; 0.1 is left for the torch path's own differences under bf16)
MAX_ACCURACY_CHANGE = 0.4
#: at most this many encoder layers, from the first, keep feed-forward MatMuls in float32
MAX_FLOAT_LAYERS = 3


def export_onnx(
    directory: str | Path, texts: Sequence[str] = PROBE_TEXTS, checks: Sequence[AccuracyCheck] = ()
) -> OnnxExport:
    """Export ``DIR``'s network to int8 ONNX, check it, and record it in the manifest (see :func:`build_onnx`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    # Without labelled checks nothing shows what int8 costs in accuracy: keep at least the float MatMuls an
    # export checked at training kept, rather than replace it with a faster one that was refused there.
    keep = manifest.onnx.kept_in_float() if manifest.onnx is not None and not checks else ()
    export = build_onnx(directory, manifest.max_length, texts, checks, keep_float=keep)
    if read_manifest(directory).version != manifest.version:
        raise ArtifactError(f"{directory} was replaced while it was being exported; export it again")
    write_manifest(directory, manifest.model_copy(update={"onnx": export}))
    return export


@dataclass(frozen=True)
class AccuracyCheck:
    """Labelled texts the export must score about as well as the float32 network: ``gold`` holds label indices."""

    name: str
    texts: Sequence[str]
    gold: Sequence[int] | NDArray[np.integer]


def build_onnx(
    directory: str | Path,
    max_length: int,
    texts: Sequence[str] = PROBE_TEXTS,
    checks: Sequence[AccuracyCheck] = (),
    keep_float: Sequence[str] = (),
) -> OnnxExport:
    """Write ``DIR/model.int8.onnx`` from ``DIR``'s safetensors network and return its manifest entry.

    Dynamic int8 quantisation takes one activation scale per tensor and forward pass, which is coarse
    where a few values are far larger than the rest: the inputs of the first encoder layers' feed-forward
    down-projections most (after the GELU; the largest value 7-10x the 99.9th percentile in layers 0-2 of
    both shipped models, against about 4x at the up-projections' inputs), measured to move the sentiment
    model's answers on tweets most. So the export tries the steps of :func:`float_ladder` in turn, every
    MatMul in int8 first, then the down-projections of layer 0, 0-1, ... in float32, then also the
    up-projections (whole feed-forward blocks of up to :data:`MAX_FLOAT_LAYERS` layers), and keeps the
    first that

    - agrees with the fp32 network's argmax on at least :data:`MIN_AGREEMENT` of ``texts``, and
    - scores each of ``checks`` within :data:`MAX_ACCURACY_CHANGE` points of the float32 network in
      accuracy and macro-F1 (on sets too small for that, within one text in accuracy), both in the
      service's passes of at most 16 texts.

    ``keep_float`` (MatMul names as in :func:`float_ladder`) skips the steps that do not keep all of them in
    float (:func:`export_onnx` without checks keeps what the artifact's export had). If none is kept,
    :class:`ArtifactError` and nothing is written. The manifest is left to the caller, so an artifact being
    written can get its manifest, export included, in one write.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{weights} not found: only safetensors artifacts can be exported")
    source_sha256 = sha256_file(weights)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    tokenizer = AutoTokenizer.from_pretrained(directory)
    network = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    names: list[str] = [
        n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names
    ]
    encoded = tokenizer(list(texts[:2]), padding=True, return_tensors="pt")
    example = {name: encoded[name] for name in names}
    # batches of 64 (padded to different lengths), then the first texts one at a time (no padding, batch of 1)
    groups = [list(texts[i : i + 64]) for i in range(0, len(texts), 64)] + [[t] for t in texts[:8]]
    expected = [_forward(network, tokenizer, names, group, max_length) for group in groups]
    # what the float32 network scores on each check, in the same passes the export is scored in
    reference = {check.name: _check_scores(network, tokenizer, names, check, max_length) for check in checks}
    refusals: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "model.onnx"
        dynamic_axes: dict[str, dict[int, str]] = {
            **{name: {0: "batch", 1: "tokens"} for name in names},
            "logits": {0: "batch"},
        }
        with torch.no_grad(), _quiet():
            torch.onnx.export(
                network,
                (),
                str(float_path),
                kwargs=example,
                input_names=names,
                output_names=["logits"],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        layers = feed_forward_nodes(onnx.load(str(float_path)))
        nodes = {
            matmul_name(index, part): node
            for index, pair in enumerate(layers)
            for part, node in zip(("up", "down"), pair)
        }
        ladder = float_ladder(min(MAX_FLOAT_LAYERS, len(layers)))
        first = next((i for i, step in enumerate(ladder) if set(keep_float) <= set(step)), len(ladder) - 1)
        for in_float in ladder[first:]:
            partial = Path(tmp) / ONNX_FILE
            with _quiet():
                # Per-channel weight scales: per-tensor ones moved cross-release intent accuracy by 0.6 points,
                # per-channel ones by at most 0.2 (README "Speed work and accuracy").
                quantize_dynamic(
                    str(float_path),
                    str(partial),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    nodes_to_exclude=[nodes[name] for name in in_float],
                )
            data = partial.read_bytes()
            onnx_network = OnnxNetwork(data, names, threads=torch.get_num_threads())
            agreement, max_diff = _agreement(expected, onnx_network, tokenizer, names, groups, max_length)
            recipe = "int8 with " + (", ".join(in_float) + " in float" if in_float else "no MatMul in float")
            if agreement < MIN_AGREEMENT:
                refusals.append(
                    f"{recipe}: the int8 export agrees with the original on only {agreement:.1%} of "
                    f"{len(texts)} probe texts (at least {MIN_AGREEMENT:.0%} needed)"
                )
                continue
            scored: dict[str, dict[str, int | float]] = {}
            # least accurate set first (most texts near a decision boundary), stopping at the first that moved
            for check in sorted(checks, key=lambda c: reference[c.name][0]):
                (accuracy, macro_f1), (ref_accuracy, ref_macro_f1) = (
                    _check_scores(onnx_network, tokenizer, names, check, max_length),
                    reference[check.name],
                )
                change = 100 * (accuracy - ref_accuracy)  # compared unrounded: one text is exactly 100/n
                f1_change = 100 * (macro_f1 - ref_macro_f1)
                scored[check.name] = {
                    "n": len(check.texts),
                    "reference": round(ref_accuracy, 6),
                    "int8": round(accuracy, 6),
                    "change": round(change, 2),
                    "macro_f1_change": round(f1_change, 2),
                }
                allowed = allowed_change(len(check.texts))
                if abs(change) > allowed + 1e-6:
                    refusals.append(
                        f"{recipe}: accuracy on {check.name} moved by {change:+.2f} points "
                        f"(at most {allowed:.2f} allowed)"
                    )
                    break
                # macro-F1 too, on sets where 0.4 points is two texts or more: below 500 texts one text can move
                # macro-F1 by more than 0.4 points, and accuracy already allows only that one text there
                two_texts_fit = 2 * one_text(len(check.texts)) <= MAX_ACCURACY_CHANGE
                if two_texts_fit and abs(f1_change) > MAX_ACCURACY_CHANGE + 1e-6:
                    refusals.append(
                        f"{recipe}: macro-F1 on {check.name} moved by {f1_change:+.2f} points "
                        f"(at most {MAX_ACCURACY_CHANGE:.2f} allowed)"
                    )
                    break
            else:
                break
        else:
            raise ArtifactError("no int8 export kept: " + "; ".join(refusals) + "; not exported")
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
        float_matmuls=in_float,
        accuracy_checks=scored,
        refused=tuple(refusals),
    )


def one_text(n: int) -> float:
    """The accuracy points one text is worth in a check set of ``n`` texts."""
    return 100 / max(1, n)


def allowed_change(n: int) -> float:
    """How far, in accuracy points, an export may move on a check set of ``n`` texts: one text on small sets."""
    return max(MAX_ACCURACY_CHANGE, one_text(n))


def float_ladder(layers: int) -> list[tuple[str, ...]]:
    """The feed-forward MatMuls kept in float32 at each step the export tries, fewest first.

    ``"0.down"`` is layer 0's down-projection, ``"0.up"`` its up-projection. For 2 layers: nothing; 0.down;
    0.down and 1.down; those and 0.up; those and 1.up (both layers' feed-forward blocks).
    """
    downs = [matmul_name(index, "down") for index in range(layers)]
    ups = [matmul_name(index, "up") for index in range(layers)]
    return [tuple(downs[:count]) for count in range(layers + 1)] + [
        tuple(downs + ups[:count]) for count in range(1, layers + 1)
    ]


def feed_forward_nodes(graph_model: ModelProto) -> list[tuple[str, str]]:
    """(up-projection, down-projection) MatMul node names of each encoder layer's feed-forward block, first layer first.

    Found by weight shape, so any BERT-like export works: the hidden size ``h`` is the side of the most common
    square weight (the attention projections); a feed-forward block is an ``(h, i)`` MatMul followed by an
    ``(i, h)`` one, with ``i > h``.
    """
    graph = graph_model.graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    matmuls = [
        (node.name, shapes[name])
        for node in graph.node
        if node.op_type == "MatMul"
        for name in node.input
        if len(shapes.get(name, ())) == 2
    ]
    square = Counter(shape[0] for _, shape in matmuls if shape[0] == shape[1])
    if not square:
        return []
    hidden = square.most_common(1)[0][0]
    up = [name for name, (rows, cols) in matmuls if rows == hidden and cols > hidden]
    down = [name for name, (rows, cols) in matmuls if cols == hidden and rows > hidden]
    return list(zip(up, down)) if len(up) == len(down) else []


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The tracer's and the quantiser's advice is for model authors, not for someone exporting an artifact.

    What it warns about (a shape or branch fixed at trace time) is what :func:`_agreement` checks: other
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


def _forward(
    network: PreTrainedModel | OnnxNetwork,
    tokenizer: PreTrainedTokenizerBase,
    names: Sequence[str],
    texts: Sequence[str],
    max_length: int,
) -> NDArray[np.float32]:
    """Logits of ``texts`` as one padded batch."""
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = {name: encoded[name] for name in names}
    with torch.inference_mode():
        logits: NDArray[np.float32] = network(**batch).logits.float().numpy()
        return logits


def _agreement(
    expected: list[NDArray[np.float32]],
    onnx_network: OnnxNetwork,
    tokenizer: PreTrainedTokenizerBase,
    names: Sequence[str],
    groups: list[list[str]],
    max_length: int,
) -> tuple[float, float]:
    """Argmax agreement and the largest logit difference of the int8 network vs the fp32 one's ``expected`` logits."""
    agree, worst, total = 0, 0.0, 0
    for want, group in zip(expected, groups):
        got = _forward(onnx_network, tokenizer, names, group, max_length)
        agree += int((want.argmax(axis=1) == got.argmax(axis=1)).sum())
        worst = max(worst, float(np.abs(want - got).max()))
        total += len(group)
    return round(agree / max(1, total), 6), round(worst, 6)


def _check_scores(
    network: PreTrainedModel | OnnxNetwork,
    tokenizer: PreTrainedTokenizerBase,
    names: Sequence[str],
    check: AccuracyCheck,
    max_length: int,
) -> tuple[float, float]:
    """A network's accuracy and macro-F1 (0-1) on ``check`` as the service runs it on CPU: sorted by length, in
    passes of at most 16 cut where padding would cost more than a pass (:func:`model.classifier.plan_passes`).

    Macro-F1 as ``triage evaluate`` reports it: the mean F1 of the classes present in the gold labels.
    """

    texts, gold = list(check.texts), np.asarray(check.gold)
    if not texts:
        return 0.0, 0.0
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    predicted = np.empty(len(texts), dtype=np.int64)
    for index in plan_passes([len(x) for x in ids], DEFAULT_CPU_PASS, CPU_PASS_COST_TOKENS):
        predicted[index] = _forward(network, tokenizer, names, [texts[i] for i in index], max_length).argmax(axis=1)
    return float((predicted == gold).mean()), macro_f1(predicted, gold)


def macro_f1(predicted: NDArray[np.integer], gold: NDArray[np.integer]) -> float:
    """The mean F1 of the classes present in ``gold`` (0 for a class never predicted right)."""
    f1 = []
    for label in np.unique(gold):
        tp = int(((predicted == label) & (gold == label)).sum())
        wrong = int(((predicted == label) != (gold == label)).sum())  # false positives + false negatives
        f1.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
    return float(np.mean(f1)) if f1 else 0.0
