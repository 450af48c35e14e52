"""structlog set-up: JSON lines (orjson) by default, console rendering only on a TTY."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """``fmt`` is auto (console on a TTY, JSON otherwise), json or console. Logs go to ``stream`` (stdout)."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer())
        factory: structlog.PrintLoggerFactory | structlog.BytesLoggerFactory = structlog.PrintLoggerFactory(stream)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory = structlog.BytesLoggerFactory(stream.buffer if hasattr(stream, "buffer") else None)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


class RepeatFolder:
    """Lets the first event of a kind through, then at most one per ``window_s``, counting the ones held back.

    A broker that is away makes librdkafka report the same failure several times a second; one line per kind and
    window says as much, with ``repeats`` telling how many were held back since the previous line of that kind
    (the ones after the last line are not reported).
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self._last: dict[object, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def admit(self, kind: object) -> int | None:
        """None: hold this one back; else the number of events of ``kind`` held back since the last one let through."""
        now = self.clock()
        with self._lock:
            last, held = self._last.get(kind, (None, 0))
            if last is not None and now - last < self.window_s:
                self._last[kind] = (last, held + 1)
                return None
            self._last[kind] = (now, 0)
            return held


_DIGITS = re.compile(r"\d+")  # "after 0ms", "after 12ms": the same line


class KafkaClientLogs(logging.Handler):
    """librdkafka's own log lines (the clients' ``logger`` property) as structured events, repeats folded.

    Without it librdkafka writes raw ``%3|...|FAIL|...`` lines to stderr, whatever the log format and level.
    """

    def __init__(self, window_s: float = 30.0):
        super().__init__(logging.DEBUG)
        self.folder = RepeatFolder(window_s)

    def emit(self, record: logging.LogRecord) -> None:
        try:  # an exception here would come out of the client's poll(), in the service's loop
            args = record.args if isinstance(record.args, tuple) and len(record.args) == 3 else None
            facility, client, message = args if args else ("", "", record.getMessage())
            repeats = self.folder.admit((client, facility, _DIGITS.sub("#", str(message))))
            if repeats is None:
                return
            extra = {"repeats": repeats} if repeats else {}
            structlog.get_logger("librdkafka").log(
                record.levelno, "kafka_client_log", facility=facility, client=client, message=message, **extra
            )
        except Exception:
            self.handleError(record)


def kafka_client_logger() -> logging.Logger:
    """The ``logger`` to give every confluent-kafka client (its lines are served by ``poll``)."""
    logger = logging.getLogger("inquiry_triage.librdkafka")
    if not logger.handlers:
        logger.addHandler(KafkaClientLogs())
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger
