"""Checks on what users hand the API: numbers, schedules and job functions.

Bad values are refused where they enter (construction, registration, enqueue)
with a clear error, so that nothing absurd is stored and no worker later trips
over it. Jobs run in threads, or as coroutines on the worker's event loop for
``async def`` functions; generator functions are refused (calling one runs nothing).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

from exqueue.errors import ConfigurationError, InvalidScheduleError

#: The longest delay accepted for a job or a backoff: about 100 years. Anything
#: further out is a unit mistake (milliseconds for seconds), not a plan.
MAX_DELAY = 100 * 365.25 * 86400
#: The most retries a worker type may have; more is a typo, and the attempt
#: counter must stay a small integer in every backend.
MAX_RETRIES = 10_000
#: The longest worker name, in characters: every backend stores it in a
#: 255-character column or key part.
MAX_WORKER_NAME = 255


def is_real(value: object) -> bool:
    """An int or float (bool excluded: ``True`` seconds is a mistake)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_seconds(what: str, value: object, *, positive: bool = False) -> float:
    """A finite number of seconds in ``[0, MAX_DELAY]`` (``> 0`` if ``positive``)."""
    if not is_real(value):
        raise ConfigurationError(f"{what} must be a number of seconds, not {value!r}")
    seconds = float(value)  # type: ignore[arg-type]
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{what} must be a finite number of seconds, not {value!r}")
    if seconds < 0 or (positive and seconds == 0):
        sign = "positive" if positive else "0 or more"
        raise ConfigurationError(f"{what} must be {sign} seconds, not {value!r}")
    if seconds > MAX_DELAY:
        raise ConfigurationError(f"{what} must be at most {MAX_DELAY:.0f} seconds (100 years)")
    return seconds


def check_count(what: str, value: object, *, low: int, high: int | None = None) -> int:
    """An int (not bool, not float) in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{what} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"{what} must be {bound}, not {value!r}")
    return value


def check_delay(delay: object) -> float:
    """An enqueue delay: a finite number of seconds within ``MAX_DELAY`` either way."""
    if not is_real(delay):
        raise TypeError(f"the delay must be a number of seconds, not {delay!r}")
    seconds = float(delay)  # type: ignore[arg-type]
    if not math.isfinite(seconds) or abs(seconds) > MAX_DELAY:
        raise InvalidScheduleError(
            f"the delay must be a finite number of seconds within 100 years, not {delay!r}"
        )
    return seconds


def check_run_at(run_at: object, now: float) -> float:
    """An absolute start time (epoch seconds) within ``MAX_DELAY`` of ``now``."""
    if not is_real(run_at):
        raise TypeError(f"run_at must be epoch seconds, not {run_at!r}")
    when = float(run_at)  # type: ignore[arg-type]
    if not math.isfinite(when) or abs(when - now) > MAX_DELAY:
        raise InvalidScheduleError(
            f"run_at must be within 100 years of now, not {run_at!r} (epoch seconds)"
        )
    return when


def worker_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be stored as a worker name, or None when it can."""
    if not isinstance(name, str):
        return f"a worker name must be a string, not {type(name).__name__}"
    if not name:
        return "a worker name must not be empty"
    if len(name) > MAX_WORKER_NAME:
        return (
            f"a worker name must be at most {MAX_WORKER_NAME} characters, "
            f"not {len(name)} ({name[:40]!r}...)"
        )
    if "\0" in name:
        return f"a worker name must not contain the NUL character: {name!r}"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"a worker name must be valid Unicode text (no lone surrogates): {name!r}"
    return None


def check_worker_name(name: object) -> str:
    """A worker name at registration: ConfigurationError naming the limit it breaks."""
    problem = worker_name_problem(name)
    if problem is not None:
        raise ConfigurationError(problem)
    return name  # type: ignore[return-value]


ASYNC_KIND = "an async (coroutine) function"


def _not_sync(fn: object) -> str | None:
    """What kind of non-plain function ``fn`` is, or None for an ordinary one."""
    # inspect's checks see through functools.partial and bound methods; a
    # callable object is judged by its __call__.
    targets = [fn]
    while isinstance(targets[-1], functools.partial):
        targets.append(targets[-1].func)
    last = targets[-1]
    if not inspect.isroutine(last) and not inspect.isclass(last):
        if callable(last):
            targets.append(type(last).__call__)
    for target in targets:
        if inspect.iscoroutinefunction(target):
            return ASYNC_KIND
        if inspect.isasyncgenfunction(target):
            return "an async generator function"
        if inspect.isgeneratorfunction(target):
            return "a generator function"
    return None


def is_async_function(fn: object) -> bool:
    """True for a coroutine function (seen through partials, bound methods and ``__call__``)."""
    return _not_sync(fn) == ASYNC_KIND


def check_worker_function(fn: object) -> None:
    """Refuse job functions whose body would not run when the worker calls them."""
    kind = _not_sync(fn)
    if kind is not None and kind != ASYNC_KIND:
        raise ConfigurationError(
            f"{fn!r} is {kind}: calling it would not run its body; register a plain "
            "function or an async def (coroutine) function"
        )


def check_result(result: Any) -> None:
    """Fail an attempt of a plain function that returned work it did not do.

    A coroutine, an awaitable or a generator returned by a worker type registered
    as a plain function would be counted a success with its body never run.
    """
    if inspect.isawaitable(result) or inspect.isgenerator(result) or inspect.isasyncgen(result):
        kind = type(result).__name__
        if inspect.iscoroutine(result) or inspect.isgenerator(result):
            result.close()  # never started: closing it avoids the "never awaited" warning
        raise TypeError(
            f"the job function returned a {kind} instead of running its work: a worker "
            "type registered as a plain function is not awaited; register an async def "
            "function to run it on the worker's event loop"
        )
