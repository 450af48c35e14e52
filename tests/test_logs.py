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
    record = logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, "%s [%s] %s",
                               ("FAIL", "inquiry-triage#consumer-1", "Connect to 127.0.0.1:1 failed"), None)
    with capture_logs() as events:
        for _ in range(5):
            handler.handle(record)
    assert events == [{"facility": "FAIL", "client": "inquiry-triage#consumer-1",
                       "message": "Connect to 127.0.0.1:1 failed", "event": "kafka_client_log", "log_level": "error"}]
