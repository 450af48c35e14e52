"""Acceptance runs driven from outside by an independent client (aiokafka), on a fresh embedded broker.

    python -m tests.acceptance stream --model-dir artifacts       # 500 inquiries + 7 bad records
    python -m tests.acceptance crash  --model-dir artifacts       # 4,000 + kill -9, 3,000 + SIGTERM

Prints one JSON object with what was counted; exits 1 when a promise does not hold.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

from devtools.broker import EmbeddedBroker
from schemas import EnrichedEvent
from schemas.deadletter import DeadLetterHeaders
from tests.harness import (
    Reconciliation,
    Service,
    metrics_port,
    read_outputs,
    samples,
    total,
    wait_for_topics,
    wait_until,
)
from tests.kafka_client import produce

ROOT = Path(__file__).resolve().parents[1]
BAD = [
    b"not json",
    b"[1, 2, 3]",
    b'{"event_id": "x"}',
    b'{"event_id": "y", "text": ""}',
    b'{"event_id": 5, "text": 7}',
    b'{"event_id": "z", "text": "caf\xc3\x28"}',
    None,
]


def texts(count: int, seed: int = 7) -> list[str]:
    path = ROOT / "data" / "bitext" / "customer_service_training_8k.csv"
    with open(path, encoding="utf-8-sig", newline="") as handle:
        pool = [row["utterance"] for row in csv.DictReader(handle)]
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(count)]


def records(start: int, count: int) -> list:
    return [
        (f"customer-{i % 50}".encode(), orjson.dumps({"event_id": f"ev-{i}", "text": t, "seq": i}), [])
        for i, t in zip(range(start, start + count), texts(count, seed=start))
    ]


def topics() -> dict[str, str]:
    return {
        "input_topic": "inquiries",
        "auto_topic": "inquiries.auto_response",
        "human_topic": "inquiries.human_agent",
        "dlq_topic": "inquiries.dlq",
        "group_id": "inquiry-triage",
    }


def stream(model_dir: Path, work: Path) -> dict:
    with EmbeddedBroker() as broker:
        names = topics()
        service = Service(broker.bootstrap_servers, model_dir, names, work / "run.log")
        wait_for_topics(broker.bootstrap_servers, list(names.values())[:4], service=service)
        good = records(0, 500)
        produce(
            broker.bootstrap_servers, names["input_topic"], good[:250] + [(b"bad", v, []) for v in BAD] + good[250:]
        )
        found = read_outputs(broker.bootstrap_servers, names, expected=507, timeout_s=300)
        port = metrics_port(service)
        wait_until(lambda: total(samples(port), "triage_events_consumed_total") >= 507, 60, "metrics to catch up")
        scraped = samples(port)
        code = service.terminate()
    routed = [r for r in found if r.topic != names["dlq_topic"]]
    events = [EnrichedEvent.model_validate(orjson.loads(r.value)) for r in routed]
    letters = [DeadLetterHeaders.from_kafka(r.headers) for r in found if r.topic == names["dlq_topic"]]
    result = Reconciliation.of({f"ev-{i}" for i in range(500)}, routed)
    topic_ok = all(
        (r.topic == names["auto_topic"]) == (e.triage.route == "auto_response") for r, e in zip(routed, events)
    )
    report = {
        "routed": len(routed),
        "lost": len(result.lost),
        "duplicates": result.duplicates,
        "auto_response": sum(e.triage.route == "auto_response" for e in events),
        "human_agent": sum(e.triage.route == "human_agent" for e in events),
        "topic_matches_route": topic_ok,
        "dlq": len(letters),
        "dlq_classes": sorted(letter.error_class for letter in letters),
        "exit_code": code,
        "order_violations": len(result.order_violations),
        "metrics": {
            "consumed": total(scraped, "triage_events_consumed_total"),
            "auto_response": total(scraped, "triage_events_routed_total", route="auto_response"),
            "human_agent": total(scraped, "triage_events_routed_total", route="human_agent"),
            "dead_letters": total(scraped, "triage_dead_letters_total"),
        },
    }
    metrics_match = report["metrics"] == {
        "consumed": 507,
        "auto_response": report["auto_response"],
        "human_agent": report["human_agent"],
        "dead_letters": len(letters),
    }
    report["metrics_match_independent_count"] = metrics_match
    report["ok"] = (
        report["routed"] == 500
        and not result.lost
        and result.duplicates == 0
        and topic_ok
        and report["auto_response"] > 0
        and report["human_agent"] > 0
        and len(letters) == 7
        and code == 0
        and metrics_match
    )
    return report


def crash(model_dir: Path, work: Path) -> dict:
    with EmbeddedBroker() as broker:
        names = topics()
        bootstrap = broker.bootstrap_servers
        first = Service(bootstrap, model_dir, names, work / "first.log")
        wait_for_topics(bootstrap, list(names.values())[:4], service=first)
        produce(bootstrap, names["input_topic"], records(0, 4000))
        wait_until(lambda: first.routed_count() >= 1000, 300, "1,000 routed before the kill")
        first.kill9()
        killed_after = first.routed_count()
        second = Service(bootstrap, model_dir, names, work / "second.log")
        phase1 = _settle(bootstrap, names, set(f"ev-{i}" for i in range(4000)))
        produce(bootstrap, names["input_topic"], records(4000, 3000))
        wait_until(lambda: second.routed_count() >= 4000 - killed_after + 1000, 300, "1,000 of the next 3,000")
        began = time.monotonic()
        sigterm_code = second.terminate(60)
        stop_s = time.monotonic() - began
        stopped_after = second.routed_count()
        third = Service(bootstrap, model_dir, names, work / "third.log")
        everything = _settle(bootstrap, names, set(f"ev-{i}" for i in range(7000)))
        third_code = third.terminate()
    dup_phase2 = everything.duplicates - phase1.duplicates
    report = {
        "kill9": {
            "routed_before_kill": killed_after,
            "lost": len(phase1.lost),
            "duplicates": phase1.duplicates,
            "duplicate_rate": round(phase1.duplicates / 4000, 4),
        },
        "sigterm": {
            "routed_before_stop": stopped_after,
            "exit_code": sigterm_code,
            "stop_seconds": round(stop_s, 2),
            "lost": len(everything.lost),
            "duplicates": dup_phase2,
        },
        "third_exit_code": third_code,
    }
    report["ok"] = (
        not phase1.lost
        and phase1.duplicates <= 200
        and sigterm_code == 0
        and not everything.lost
        and dup_phase2 == 0
        and killed_after < 4000
        and stopped_after < 7000
    )
    return report


def _settle(bootstrap, names, expected: set[str]) -> Reconciliation:
    deadline = time.monotonic() + 600
    while True:
        result = Reconciliation.of(expected, read_outputs(bootstrap, names, len(expected), timeout_s=60, settle_s=2))
        if not result.lost or time.monotonic() > deadline:
            return result
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=("stream", "crash"))
    parser.add_argument("--model-dir", type=Path, default=ROOT / "artifacts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        report = (stream if args.check == "stream" else crash)(args.model_dir.resolve(), Path(work))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
