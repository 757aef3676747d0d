"""Retry policy: every decision about a job's attempts, apart from the storage.

The defaults a worker type gets, whether a failed attempt is retried or the
job dies, how long it waits first (the backoff shapes), and the rule recovery
applies to a job whose worker was lost. The runtime asks this module and
records the answer; the storage applies it. The one rule a backend applies
itself is :func:`attempts_left` inside ``Storage.recover``, because it must hold
in the same atomic transition that takes the job from its lost worker (the
protocol docstring says so).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from exqueue.errors import ConfigurationError
from exqueue.guards import check_seconds, is_real

#: The largest growth factor: beyond it the delay reaches the cap after one retry.
MAX_FACTOR = 1000.0
#: Retries a worker type gets unless it says otherwise (and a job enqueued for a
#: worker type registered only in another process).
DEFAULT_MAX_RETRIES = 5
#: Seconds between attempts unless the worker type gives a backoff.
DEFAULT_RETRY_DELAY = 30.0
#: Seconds a claim holds without a heartbeat.
DEFAULT_LEASE = 30.0


def attempts_left(attempt: int, max_attempts: int) -> bool:
    """Whether a job that has used ``attempt`` of ``max_attempts`` may run again.

    The runtime asks it after a failure; each backend's ``recover`` applies the
    same rule atomically (``attempt < max_attempts`` -> waiting, else dead).
    """
    return attempt < max_attempts


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt is retried: wait ``delay`` seconds, run again at ``run_at``."""

    delay: float
    run_at: float


def after_failure(attempt: int, max_attempts: int, backoff: Backoff, now: float) -> Retry | None:
    """What follows failed attempt ``attempt``: a :class:`Retry`, or None when the job dies.

    An undecodable payload is not asked about: no retry can read it, so it dies
    at once.
    """
    if not attempts_left(attempt, max_attempts):
        return None
    delay = backoff.delay(attempt)
    return Retry(delay, now + delay)


class Backoff(Protocol):
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""

    def delay(self, attempt: int) -> float: ...


@dataclass(frozen=True)
class Fixed:
    """The same delay after every failure (the default: 30 seconds)."""

    seconds: float = 30.0

    def __post_init__(self) -> None:
        check_seconds("Fixed(seconds)", self.seconds)

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
        # Each is checked finite and in range: a NaN would pass every comparison
        # below and turn into a NaN run_at.
        check_seconds("Exponential(base)", self.base)
        check_seconds("Exponential(cap)", self.cap)
        if not is_real(self.factor) or not 1 <= self.factor <= MAX_FACTOR:
            raise ConfigurationError(
                f"Exponential(factor) must be a number from 1 to {MAX_FACTOR}, not {self.factor!r}"
            )
        if not is_real(self.jitter) or not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                f"Exponential(jitter) must be a number from 0 to 1, not {self.jitter!r}"
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
