"""Backoff for retries and a circuit breaker around the model."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with a cap and +-20% jitter (members that failed together do not retry together)."""

    base_s: float
    max_s: float
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next(self) -> float:
        delay = min(self.max_s, self.base_s * 2**self.attempts)
        self.attempts += 1
        return delay * self.rng.uniform(0.8, 1.2) if delay > 0 else 0.0

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class Breaker:
    """Opens after ``limit`` consecutive failing batches; while open, one probe batch every ``cooldown_s``.

    A model that raises or hangs on every batch would otherwise be retried in a tight loop (or crash every
    member of the group in turn); open, the runner stops consuming, keeps its partitions and says why.
    """

    limit: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether a batch may be tried now: always when closed; when open, once the cooldown has passed."""
        return self.opened_at is None or self.clock() - self.opened_at >= self.cooldown_s

    def failed(self, reason: str) -> bool:
        """Count a failing batch; True when this failure opens the breaker (or a probe failed: it re-opens)."""
        self.failures += 1
        self.reason = reason
        if self.failures >= self.limit:
            self.opened_at = self.clock()
            return True
        return False

    def succeeded(self) -> bool:
        """A batch went through; True when that closed an open breaker."""
        was_open = self.is_open
        self.failures, self.opened_at, self.reason = 0, None, None
        return was_open
