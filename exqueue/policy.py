"""Retry policies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class Backoff(Protocol):
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""

    def delay(self, attempt: int) -> float: ...


@dataclass(frozen=True)
class Fixed:
    """The same delay after every failure (the default: 30 seconds)."""

    seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("Fixed(seconds) must be >= 0")

    def delay(self, attempt: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class Exponential:
    """``base * factor ** (attempt - 1)``, at most ``cap``, plus up to ``jitter`` of it at random.

    ``jitter=0.1`` adds a random 0–10 % so that jobs failing together spread out.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(
                "Exponential needs base >= 0, factor >= 1, cap >= 0 and 0 <= jitter <= 1"
            )

    def delay(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.cap
        seconds = min(raw, self.cap)
        if self.jitter:
            seconds += seconds * self.jitter * random.random()
        return seconds
