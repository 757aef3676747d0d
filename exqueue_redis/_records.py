"""Reading RedisStorage's job hashes into records, and checking numbers before a script.

Numbers are checked in Python before they reach a Lua script (the scripts check
them again, before their first write): a transition applies whole or not at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

from exqueue.storage import ERRORS_KEPT, JobRecord, JobState


def _record(flat: list[bytes]) -> JobRecord:
    return _record_from(dict(zip(flat[::2], flat[1::2], strict=True)))


def _record_from(f: dict[bytes, bytes]) -> JobRecord:
    token = f.get(b"lease_token")
    expires = f.get(b"lease_expires")
    owner = f.get(b"lease_owner")
    started = f.get(b"started_at")
    return JobRecord(
        id=f[b"id"].decode(),
        seq=int(f[b"seq"]),
        worker=f[b"worker"].decode(),
        payload=f[b"payload"],
        state=cast(JobState, f[b"state"].decode()),
        attempt=int(f[b"attempt"]),
        max_attempts=int(f[b"max_attempts"]),
        run_at=float(f[b"run_at"]),
        enqueued_at=float(f[b"enqueued_at"]),
        errors=tuple(
            _text(error)
            for i in _kept(int(f[b"errors"]))
            if (error := f.get(b"error:%d" % i)) is not None
        ),
        error_count=int(f[b"errors"]),
        lease_owner=owner.decode() if owner is not None else None,
        lease_token=token.decode() if token is not None else None,
        lease_expires=float(expires) if expires is not None else None,
        started_at=float(started) if started is not None else None,
    )


def _readable(f: dict[bytes, bytes]) -> JobRecord:
    """A record for listing and ``get``, even from a damaged hash.

    Claims never return a damaged job (the claim script makes it dead with the
    reason); a job damaged while waiting or dead is shown with defaults in the
    unreadable fields and a last error saying which they are, so one bad hash
    does not break listing the queue.
    """
    try:
        return _record_from(f)
    except (KeyError, ValueError, TypeError, OverflowError):
        pass
    bad: list[str] = []

    def field(name: str, parse: Callable[[bytes], Any], default: Any) -> Any:
        raw = f.get(name.encode())
        try:
            if raw is None:
                raise ValueError
            value = parse(raw)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError
            return value
        except (ValueError, TypeError, OverflowError):
            bad.append(f"{name}={raw!r}"[:80])
            return default

    state = field("state", _utf8, "dead")
    if state not in ("waiting", "running", "dead"):
        bad.append(f"state={state!r}"[:80])
        state = "dead"
    count = field("errors", int, 0)
    errors = [f.get(b"error:%d" % i) for i in _kept(count)]
    owner, token, expires = f.get(b"lease_owner"), f.get(b"lease_token"), f.get(b"lease_expires")
    lease_expires = field("lease_expires", float, None) if expires is not None else None
    started_at = field("started_at", float, None) if b"started_at" in f else None
    job_id, seq, worker = field("id", _utf8, ""), field("seq", int, 0), field("worker", _utf8, "")
    attempt, max_attempts = field("attempt", int, 0), field("max_attempts", int, 0)
    run_at, enqueued_at = field("run_at", float, 0.0), field("enqueued_at", float, 0.0)
    return JobRecord(
        id=job_id,
        seq=seq,
        worker=worker,
        payload=f.get(b"payload", b""),
        state=cast(JobState, state),
        attempt=attempt,
        max_attempts=max_attempts,
        run_at=run_at,
        enqueued_at=enqueued_at,
        errors=(
            *(_text(error) for error in errors if error is not None),
            "damaged stored job: " + ", ".join(bad),
        ),
        lease_owner=_text(owner) if owner is not None else None,
        lease_token=_text(token) if token is not None else None,
        lease_expires=lease_expires,
        started_at=started_at,
    )


def _kept(count: int) -> list[int]:
    """The numbers of the error fields a job of ``count`` errors keeps (first, last N).

    A hash written before the bound holds the others too; they are not read.
    """
    return [1, *range(max(2, count - ERRORS_KEPT + 1), count + 1)] if count > 0 else []


def _utf8(raw: bytes) -> str:
    return raw.decode()


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


def _number(value: float, what: str) -> str:
    """``value`` as the exact text the scripts store; refuses NaN, inf and non-numbers.

    Checked here, before anything reaches a script (the scripts check again).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return repr(number)


def _count(value: int, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if not minimum <= value < 10**15:
        raise ValueError(f"{what} must be an integer from {minimum} to 10**15, not {value!r}")
    return value
