"""`triage bench` on tiny models: it runs and reports every number (speed is not asserted), and the
model's fast paths it measures give the same numbers as the plain Hugging Face way."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pytest

from devtools.bench import BenchOptions, load_texts, pick, run_bench
from devtools.benchdoc import table as markdown


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value) and value > 0


@pytest.mark.slow
@pytest.mark.integration
def test_bench_json_reports_every_measurement(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("TRIAGE_BATCH_SIZE", "32")  # several batches out of 200 (the rate excludes the first)
    args = argparse.Namespace(
        json=True, n=200, model_dir=tiny_model_dir, seed_texts=10, model_texts=200, latency_s=2, members=2
    )
    assert run_bench(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout holds exactly one JSON object: progress went to stderr
    assert {"seed", "model", "end_to_end", "latency", "ratios", "load_before", "load_after"} <= set(result)

    assert result["seed"]["texts"] == 10 and _positive(result["seed"]["per_s"])
    assert result["model"]["texts"] == 200 and _positive(result["model"]["per_s"])
    assert result["model"]["batch_size"] == result["batch_size"]
    e2e = result["end_to_end"]
    assert e2e["messages"] == 200 and _positive(e2e["per_s"]) and _positive(e2e["seconds"])
    assert e2e["service"]["batches"] >= 1
    latency = result["latency"]
    assert latency["messages"] >= 1 and _positive(latency["target_per_s"])
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert _positive(latency[key]), key
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    for key in ("e2e_over_seed", "e2e_over_model", "model_over_seed"):
        assert _positive(result["ratios"][key]), key
    scale = result["scale_out"]  # two members in one group shared the partitions and drained a second backlog
    assert scale["members"] == 2 and scale["messages"] == 200 and sorted(scale["split"]) == [2, 2]
    assert _positive(scale["per_s"]) and _positive(scale["over_one_member"])
    # each phase tells how the machine's CPU was shared while it was measured (/proc: Linux)
    assert {"broker", "service", "bench"} <= set(e2e["cpu_cores"]) and e2e["cpu_cores"]["service"] > 0
    assert {"broker", "steady_service", "bench"} <= set(latency["cpu_cores"])
    assert {"broker", "member1", "member2"} <= set(scale["cpu_cores"])
    table = markdown(result)  # docs/benchmarks.md's table, from the same JSON
    assert result["host"]["cpus"] == os.cpu_count()
    assert f"{e2e['per_s']:.1f}" in table and f"p99 {latency['p99_ms']} ms" in table and "(5) 2 members" in table


def test_bench_without_models_is_a_clear_error(tmp_path, capsys):
    assert run_bench(argparse.Namespace(json=True, n=10, model_dir=tmp_path)) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "train" in captured.err


def test_options_default_from_the_cli_namespace(tmp_path):
    options = BenchOptions.from_args(argparse.Namespace(json=False, n=6000, model_dir=tmp_path))
    assert options.n == 6000 and options.seed_texts > 0 and options.latency_s > 0


def test_texts_are_realistic_and_cycled():
    texts, source = load_texts()
    assert texts and all(t.strip() for t in texts) and source
    picked = pick(texts, len(texts) + 5, seed=0)
    assert len(picked) == len(texts) + 5 and pick(texts, 10, seed=0) == pick(texts, 10, seed=0)


TEXTS = [
    "i want a refund thanks",
    "my password is awful",
    "can you help me talk to an agent please",
    "track my order",
    "i have a complaint, this is terrible and i am furious",
    "great",
    "how do i track it",
]


def test_fast_paths_give_the_plain_huggingface_logits(tiny_model_dir):
    """Pre-cast/pre-packed weights, one tokenization, token-length sorting: the same logits as the plain way."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model import TextClassifier

    for task in ("intent", "sentiment"):
        classifier = TextClassifier.load(tiny_model_dir / task, backend="torch")
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / task)
        network = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / task).eval()
        dtype = classifier.device.autocast_dtype
        for index in range(len(TEXTS)):  # one text at a time: no padding, so the plain way is unambiguous
            encoded = tokenizer([TEXTS[index]], truncation=True, max_length=classifier.max_length, return_tensors="pt")
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                expected = network(**encoded).logits.float().numpy()[0]
            np.testing.assert_allclose(classifier.logits([TEXTS[index]])[0], expected, rtol=1e-5, atol=1e-5)
        batched = classifier.logits(TEXTS, batch_size=3)  # sorted, padded per sub-batch, back in input order
        single = np.stack([classifier.logits([t])[0] for t in TEXTS])
        assert (batched.argmax(axis=1) == single.argmax(axis=1)).all()
        np.testing.assert_allclose(batched, single, atol=0.05)


def test_one_tokenization_serves_both_models_only_when_tokenizers_match(tiny_model_dir):
    from model import TriageModel
    from model.classifier import TextClassifier

    model = TriageModel.load(tiny_model_dir)
    assert model.shared_tokenizer
    assert model.intent.tokenizer_signature == model.sentiment.tokenizer_signature

    other = TextClassifier.load(tiny_model_dir / "sentiment")
    other.tokenizer.add_tokens(["refundz"])  # a different vocabulary: ids may differ
    assert other.tokenizer_signature != model.intent.tokenizer_signature
    assert not TriageModel(model.intent, other).shared_tokenizer


def test_side_by_side_and_one_after_the_other_predict_the_same(tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    from model import TriageModel

    model = TriageModel.load(tiny_model_dir)
    pool = model._pool or ThreadPoolExecutor(max_workers=1)
    model._pool = None
    sequential = model.predict(TEXTS)
    model._pool = pool
    assert model.predict(TEXTS) == sequential


def _arrival(event: int, stamp: float, phase: bytes = b"backlog"):
    from devtools.bench import Arrival

    return Arrival(
        at=stamp + 0.01, topic="out", phase=phase, sent=0.0, broker_ts=stamp, value=b"{}", event=str(event).encode()
    )


def test_backlog_rate_counts_each_event_once_and_leaves_out_the_first_batches():
    from devtools.bench import _backlog_rate

    arrivals = [_arrival(i, 100.0 + (i // 10) * 0.5) for i in range(40)]  # 4 batches of 10, 0.5 s apart
    arrivals += [_arrival(35, 102.0)]  # re-routed after a rebalance: counted once, at its first stamp
    rate = _backlog_rate(arrivals, first_batches=10)
    assert rate["messages"] == 40 and rate["duplicates"] == 1 and rate["first_batch"] == 10
    assert rate["seconds"] == 1.5 and rate["per_s"] == 20.0  # 30 events after the first batch in 1.5 s
    assert _backlog_rate(arrivals, first_batches=20)["per_s"] == round(20 / 1.5, 1)  # two members' first batches


def test_backlog_rate_refuses_a_backlog_of_one_batch():
    from devtools.bench import _backlog_rate

    with pytest.raises(RuntimeError, match="several batches"):
        _backlog_rate([_arrival(i, 100.0) for i in range(10)], first_batches=10)


def test_first_batches_and_routed_come_from_the_batch_log_lines(tmp_path):
    from devtools.bench import _first_batches, _routed

    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text(
        'not json\n{"event": "started"}\n'
        '{"event": "batch", "size": 7, "auto_response": 5, "human_agent": 1, "dlq": 1}\n'
        '{"event": "batch", "size": 3, "auto_response": 3, "human_agent": 0, "dlq": 0}\n'
    )
    two.write_text('{"event": "batch", "size": 4, "auto_response": 2, "human_agent": 2, "dlq": 0}\n')
    assert _first_batches([one, two]) == 11 and _routed([one, two]) == 14
    assert _first_batches([tmp_path / "not-yet.log"]) == 0 and _routed([tmp_path / "not-yet.log"]) == 0


def test_cpu_meter_cores_over_a_window():
    from devtools.bench import CpuMeter

    meter = CpuMeter(every_s=3600)  # no sampling thread activity: the samples are set by hand
    meter.close()
    meter.samples = [
        (10.0, {"svc": 1.0}),
        (11.0, {"svc": 2.5}),
        (12.0, {"svc": 4.0, "broker": 0.0}),
        (13.0, {"svc": 4.0, "broker": 0.2}),
    ]
    assert meter.cores("svc", 10.0, 12.0) == 1.5  # 3 CPU-seconds in 2 s
    assert meter.cores("svc", 10.5, 11.5) == 1.5  # rounded out to the samples around the window
    assert meter.cores("svc", 12.0, 13.0) == 0.0
    assert meter.shares(12.0, 13.0, ["broker", "svc", "absent"]) == {"broker": 0.2, "svc": 0.0}
    assert meter.cores("broker", 12.5, 12.6) == 0.2 and meter.cores("absent", 10.0, 13.0) is None


def test_steady_load_windows_show_latency_and_broker_cpu_over_time():
    from devtools.bench import Arrival, CpuMeter, _windows

    meter = CpuMeter(every_s=3600)
    meter.close()
    meter.samples = [(100.0, {"broker": 0.0}), (105.0, {"broker": 1.0}), (110.0, {"broker": 4.0})]
    # 10 events sent in the first 5 s, routed after 50 ms; 10 in the next 5 s, routed after 300 ms
    arrivals = [
        Arrival(
            at=100.0 + i * 0.5 + 0.05, topic="t", phase=b"steady", sent=100.0 + i * 0.5, broker_ts=math.nan, value=None
        )
        for i in range(10)
    ]
    arrivals += [
        Arrival(
            at=105.0 + i * 0.5 + 0.3, topic="t", phase=b"steady", sent=105.0 + i * 0.5, broker_ts=math.nan, value=None
        )
        for i in range(10)
    ]
    windows = _windows(arrivals, 100.0, meter)
    assert [w["from_s"] for w in windows] == [0.0, 5.0] and [w["messages"] for w in windows] == [10, 10]
    assert windows[0]["p99_ms"] == pytest.approx(50.0, abs=0.1) and windows[1]["p99_ms"] == pytest.approx(
        300.0, abs=0.1
    )
    assert [w["broker_cores"] for w in windows] == [0.2, 0.6]
    result = json.loads((Path(__file__).parent.parent / "reports" / "bench.json").read_text())
    result["latency"]["windows"] = windows
    assert "| (4) by 5.0 s of production time | | | | p99 50, 300 ms; broker 0.20, 0.60 cores |" in markdown(result)


def test_benchmarks_page_is_the_one_the_reports_give():
    """docs/benchmarks.md is generated from reports/bench*.json: edited figures (or a new report) fail here."""
    from devtools import benchdoc

    assert benchdoc.main(["--check"]) == 0, "run: python -m devtools.benchdoc"


def test_sizing_is_computed_from_the_measured_rate():
    from devtools.benchdoc import sizing

    cpu = {"host": {"cpus": 2}, "end_to_end": {"per_s": 1000.0}}
    gpu = {"host": {"cpus": 16, "gpu": "Some GPU"}, "end_to_end": {"per_s": 7000.0}}
    rows = sizing([cpu, gpu], target=14_000).splitlines()[2:]
    assert "| 20 | 20 | 40 cores |" in rows[0]  # 14,000 / (1,000 x 0.7)
    assert "| 3 | 3 | 3 GPUs, one member each |" in rows[1]  # ceil(14,000 / 4,900)
