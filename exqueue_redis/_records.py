"""Reading RedisStorage's job hashes into records, and checking values before a script.

Numbers are checked in Python before they reach a Lua script (the scripts check
them again, before their first write): a transition applies whole or not at all.
``meta`` is stored as a JSON object of strings; one that does not read back as
that is damage, handled like any other unreadable field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

from exqueue.storage import (
    ERRORS_KEPT,
    PARTITION_KEY_LIMIT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    JobRecord,
    JobState,
    NewJob,
    clip_error,
)


def _record(flat: list[bytes]) -> JobRecord:
    return _record_from(dict(zip(flat[::2], flat[1::2], strict=True)))


def _record_from(f: dict[bytes, bytes]) -> JobRecord:
    # Positional, and no helper call for a field that is absent: claims decode
    # every job they return here, so this is on every job's path.
    get = f.get
    count = int(f[b"errors"])
    errors = (
        tuple(_text(error) for i in _kept(count) if (error := get(b"error:%d" % i)) is not None)
        if count > 0
        else ()
    )
    owner = get(b"lease_owner")
    token = get(b"lease_token")
    expires = get(b"lease_expires")
    started = get(b"started_at")
    priority = get(b"priority")
    meta = get(b"meta")
    timeout = get(b"timeout")
    expires_at = get(b"expires_at")
    unique = get(b"unique_key")
    partition = get(b"partition")
    return JobRecord(
        f[b"id"].decode(),
        int(f[b"seq"]),
        f[b"worker"].decode(),
        f[b"payload"],
        cast(JobState, f[b"state"].decode()),
        int(f[b"attempt"]),
        int(f[b"max_attempts"]),
        float(f[b"run_at"]),
        float(f[b"enqueued_at"]),
        errors,
        None if owner is None else owner.decode(),
        None if token is None else token.decode(),
        None if expires is None else float(expires),
        None if started is None else float(started),
        count,
        0 if priority is None else _priority(priority),
        {} if meta is None else _meta(meta),
        None if timeout is None else _optional_float(timeout),
        None if expires_at is None else _optional_float(expires_at),
        None if unique is None else unique.decode(),
        None if partition is None else partition.decode(),
    )


#: The hash fields a claim returns, in this order (see ``_claim_script.CLAIM``).
CLAIMED_FIELDS = (
    "id", "seq", "worker", "payload", "attempt", "max_attempts", "run_at", "enqueued_at",
    "errors", "priority", "meta", "timeout", "expires_at", "unique_key", "partition",
)  # fmt: skip
_CLAIMED = len(CLAIMED_FIELDS)
_ABSENT: list[bytes | None] = [None] * _CLAIMED


def _claim_reply(flat: list[Any]) -> tuple[list[Any], list[list[Any]], int]:
    """A CLAIM reply cut apart: the damaged (id, reason) values, the rows, and the
    index where the claim's part of ``flat`` ends (see ``_claim_script.CLAIM``)."""
    n_damaged, n_rows = flat[0], flat[1]
    at = 2 + n_damaged
    rows = []
    for _ in range(n_rows):
        end = at + 1 + flat[at]
        rows.append(flat[at + 1 : end])
        at = end
    return flat[2 : 2 + n_damaged], rows, at


def _claimed(
    row: list[bytes | None], owner: str, token: str, lease_expires: float, started_at: float
) -> JobRecord:
    """The record of a job the claim script just leased, from its positional reply.

    The state and the lease fields are the ones the claim wrote, so they are not
    sent back; every other field is read as :func:`_record_from` reads it (the
    same checks, the same errors for a damaged one).
    """
    if len(row) < _CLAIMED:  # a plain job: the optional fields are absent
        row = [*row, *_ABSENT[len(row) :]]
    (
        job_id, seq, worker, payload, attempt, max_attempts, run_at, enqueued_at,
        errors, priority, meta, timeout, expires_at, unique, partition,
    ) = row[:_CLAIMED]  # fmt: skip
    count = int(errors)  # type: ignore[arg-type]
    kept: tuple[str, ...] = ()
    if count > 0:
        texts = dict(zip(row[_CLAIMED::2], row[_CLAIMED + 1 :: 2], strict=True))
        kept = tuple(
            _text(text) for i in _kept(count) if (text := texts.get(b"error:%d" % i)) is not None
        )
    if payload is None:
        raise KeyError("payload")
    return JobRecord(
        job_id.decode(),  # type: ignore[union-attr]
        int(seq),  # type: ignore[arg-type]
        worker.decode(),  # type: ignore[union-attr]
        payload,
        "running",
        int(attempt),  # type: ignore[arg-type]
        int(max_attempts),  # type: ignore[arg-type]
        float(run_at),  # type: ignore[arg-type]
        float(enqueued_at),  # type: ignore[arg-type]
        kept,
        owner,
        token,
        lease_expires,
        started_at,
        count,
        0 if priority is None else _priority(priority),
        {} if meta is None else _meta(meta),
        None if timeout is None else _optional_float(timeout),
        None if expires_at is None else _optional_float(expires_at),
        None if unique is None else unique.decode(),
        None if partition is None else partition.decode(),
    )


def _priority(raw: bytes) -> int:
    value = int(raw)
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValueError(f"priority {value} is out of range")
    return value


def _meta(raw: bytes | None) -> dict[str, str]:
    if raw is None:
        return {}
    meta = json.loads(raw)
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ValueError("meta is not an object of strings")
    return meta


def _optional_float(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not finite")
    return value


def _optional_text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _enqueue_args(job: NewJob) -> tuple[bytes | str | int, ...]:
    """The 7 values of one job in an ENQUEUE call (see ``_scripts.ENQUEUE``)."""
    priority = job.priority
    if (
        type(priority) is int  # a bool or another type takes the checked path below
        and priority == 0
        and not job.meta
        and job.timeout is None
        and job.expires_at is None
        and job.unique is None
        and job.partition is None
        and job.dead_error is None
    ):
        options = ""  # the common case: no options to encode or decode
    else:
        options = _options_arg(job)
    return (
        job.id, job.worker, job.payload, _number(job.run_at, "run_at"),
        _number(job.enqueued_at, "enqueued_at"), _count(job.max_attempts, "max_attempts", 1),
        options,
    )  # fmt: skip


def _options_arg(job: NewJob) -> str:
    """The options value of a job with any protocol-2 or limits field set ("" if none is)."""
    unique = job.unique if job.dead_error is None else None  # a dead job holds no key
    priority = _priority_arg(job.priority)
    extra = job.partition is not None or job.dead_error is not None
    if priority == "0" and not job.meta and job.timeout is None and job.expires_at is None:
        if unique is None and not extra:
            return ""
    options = [
        priority, _meta_arg(job.meta),
        "" if job.timeout is None else _number(job.timeout, "timeout"),
        "" if job.expires_at is None else _number(job.expires_at, "expires_at"),
        "0" if unique is None else "1",
        "" if unique is None else unique.key,
        "" if unique is None else "".join(s[0] for s in sorted(unique.states) if s != "waiting"),
        "" if unique is None or unique.period is None else _number(unique.period, "period"),
    ]  # fmt: skip
    if extra:
        options += _limit_options(job)
    return json.dumps(options, ensure_ascii=False, separators=(",", ":"))


def _priority_arg(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an integer, not {type(value).__name__}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValueError(f"priority must be from {PRIORITY_MIN} to {PRIORITY_MAX}, not {value}")
    return str(value)


def _meta_arg(meta: Mapping[str, str]) -> str:
    if not meta:
        return ""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError("meta must map str to str")
    return json.dumps(dict(meta), ensure_ascii=False, separators=(",", ":"))


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
    priority = field("priority", _priority, 0) if b"priority" in f else 0
    meta = field("meta", _meta, {}) if b"meta" in f else {}
    timeout = field("timeout", _optional_float, None) if b"timeout" in f else None
    expires_at = field("expires_at", _optional_float, None) if b"expires_at" in f else None
    unique_key = field("unique_key", _utf8, None) if b"unique_key" in f else None
    partition = field("partition", _utf8, None) if b"partition" in f else None
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
        priority=priority,
        meta=meta,
        timeout=timeout,
        expires_at=expires_at,
        unique_key=unique_key,
        partition=partition,
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


def _limit_options(job: NewJob) -> list[str]:
    """The 4 more ENQUEUE options of a job with a partition or a dead_error."""
    part, dead = job.partition, job.dead_error
    if part is not None:
        if not isinstance(part, str):
            raise ValueError(f"job {job.id!r}: partition must be a str or None, not {part!r}")
        if len(part.encode("utf-8", "surrogatepass")) > PARTITION_KEY_LIMIT:
            raise ValueError(
                f"job {job.id!r}: partition takes at most {PARTITION_KEY_LIMIT} UTF-8 bytes "
                "(the core hashes longer keys); nothing was stored"
            )
    return [
        "0" if part is None else "1", part or "",
        "0" if dead is None else "1", "" if dead is None else clip_error(dead),
    ]  # fmt: skip
