"""A stable identity per service process, for exactly-once mode's ``transactional.id``.

Kafka fences a producer when a new one starts with the same ``transactional.id``: the new one aborts what the
old one left open, so readers (read_committed) do not wait ``transaction.timeout.ms`` for a killed member's
transaction, and a zombie that wakes up can no longer commit. That needs the id to be the *same* after a
restart and *different* for every process running at once. Unless ``transactional_id`` is set, each process
claims the lowest free numbered slot on its host (an exclusive file lock, released by the kernel when the
process dies, however it dies) and builds its id from prefix, group, host name and slot.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from consumer.errors import ConfigError
from consumer.settings import Settings

MAX_SLOTS = 1024


@contextmanager
def transactional_id(settings: Settings) -> Iterator[str]:
    """Yield this process's ``transactional.id``, holding its slot until the context exits."""
    if settings.transactional_id:
        yield settings.transactional_id
        return
    host = _name(socket.gethostname()) or "host"
    group = _name(settings.group_id)
    folder = settings.state_dir / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        fd = os.open(folder / f"{group}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield f"{settings.transactional_id_prefix}-{group}-{host}-{slot}"
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise ConfigError(
        f"more than {MAX_SLOTS} service processes of group {settings.group_id!r} on this host; "
        f"set TRIAGE_TRANSACTIONAL_ID per process"
    )


def _name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
