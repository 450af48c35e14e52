"""One event from the input topic to a routing topic, followed through the modules docs/architecture.md names."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from tests.fake_kafka import FakeBroker
from tests.test_runner_faults import Service, settled

ROOT = Path(__file__).resolve().parents[1]
#: the modules of architecture.md's "One event through the modules", in the order it names them
NAMED = re.compile(r"`((?:consumer|model|schemas)/\w+\.py)`")


def documented_path() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paragraph = text[text.index("**One event through the modules.**") :].split("\n\n")[0]
    names = [name for name in NAMED.findall(paragraph) if name != "schemas/deadletter.py"]  # the bad-record branch
    return list(dict.fromkeys(names))


def test_one_event_touches_the_documented_modules_in_order(tiny_model, tmp_path):
    watched = set(documented_path())
    assert len(watched) >= 6, watched
    first_calls: list[str] = []
    lock = threading.Lock()

    def profile(frame, event, _arg):
        if event != "call":
            return
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(ROOT):
            name = path.relative_to(ROOT).as_posix()
            if name in watched and name not in first_calls:
                with lock:
                    if name not in first_calls:
                        first_calls.append(name)

    broker = FakeBroker()
    broker.send(1)
    threading.setprofile(profile)  # the threads the service starts: its run loop and inference worker
    try:
        service = Service(broker, tiny_model, tmp_path)
        service.wait(settled(broker))
    finally:
        threading.setprofile(None)
    service.stop()
    assert len(broker.delivered()) == 1
    assert first_calls == documented_path(), (first_calls, documented_path())
