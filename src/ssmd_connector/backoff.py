"""Capped exponential backoff with full jitter, reset after a connection proves healthy."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    healthy_after: float = 10.0
    """A connection that stayed up this long resets the delay to ``initial``."""
    _attempt: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt: uniform in [cap/2, cap] (jittered, never zero)."""
        cap = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return cap / 2 + self._rng.random() * cap / 2

    def connection_lasted(self, seconds: float) -> None:
        if seconds >= self.healthy_after:
            self._attempt = 0
