"""Repeated failures are folded; librdkafka's own lines become structured events."""

import logging

from structlog.testing import capture_logs

from consumer.logs import KafkaClientLogs, RepeatFolder


def test_repeats_are_held_back_within_the_window_and_counted():
    now = [0.0]
    folder = RepeatFolder(window_s=30, clock=lambda: now[0])
    assert folder.admit("down") == 0
    now[0] = 10
    assert folder.admit("down") is None and folder.admit("down") is None
    assert folder.admit("other") == 0  # kinds are folded separately
    now[0] = 31
    assert folder.admit("down") == 2  # the two held back since the last one let through


def test_librdkafka_lines_become_events_with_repeats_folded():
    handler = KafkaClientLogs(window_s=60)
    record = logging.LogRecord(
        "librdkafka",
        logging.ERROR,
        __file__,
        1,
        "%s [%s] %s",
        ("FAIL", "inquiry-triage#consumer-1", "Connect to 127.0.0.1:1 failed"),
        None,
    )
    with capture_logs() as events:
        for _ in range(5):
            handler.handle(record)
    assert events == [
        {
            "facility": "FAIL",
            "client": "inquiry-triage#consumer-1",
            "message": "Connect to 127.0.0.1:1 failed",
            "event": "kafka_client_log",
            "log_level": "error",
        }
    ]


def test_different_clients_and_lines_are_not_folded_together_and_a_failing_handler_never_raises(monkeypatch):
    handler = KafkaClientLogs(window_s=60)

    def record(client, message):
        return logging.LogRecord(
            "librdkafka", logging.ERROR, __file__, 1, "%s [%s] %s", ("FAIL", client, message), None
        )

    with capture_logs() as events:
        handler.handle(record("c#consumer-1", "Connect failed (after 0ms in state CONNECT)"))
        handler.handle(record("c#consumer-1", "Connect failed (after 12ms in state CONNECT)"))  # the same line
        handler.handle(record("c#producer-1", "Connect failed (after 0ms in state CONNECT)"))
        handler.handle(record("c#consumer-1", "Metadata request failed"))
    assert [(e["client"], e["message"][:14]) for e in events] == [
        ("c#consumer-1", "Connect failed"),
        ("c#producer-1", "Connect failed"),
        ("c#consumer-1", "Metadata reque"),
    ]

    def broken(*_args, **_kwargs):
        raise RuntimeError("the log stream is gone")

    monkeypatch.setattr(handler.folder, "admit", broken)
    monkeypatch.setattr(logging, "raiseExceptions", False)  # handleError reports to stderr only when this is set
    handler.handle(record("c#consumer-1", "anything"))  # no exception out of the client's poll()
