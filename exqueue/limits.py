"""Cluster-wide limits of a worker type (issue 15): their checks, rates, and partition keys.

``@queue.worker(global_limit=N, partition=..., rate_limit="100/m")`` becomes a
:class:`WorkerLimits`: checked at registration (a clear error, nothing
registered), turned into the storage's :class:`~exqueue.storage.Limits` for
every ``claim_limited``, and, at each enqueue of a partitioned type, asked for
the job's partition key. A partition function that raises or returns a
non-string does not fail the enqueue and does not leave a job stuck: the job
is stored dead with the reason (``NewJob.dead_error``), where a person sees it.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from exqueue.errors import ConfigurationError
from exqueue.options import HASHED_KEY_PREFIX
from exqueue.storage import LIMITS, PARTITION_KEY_LIMIT, Limits, Storage

#: A partition: the name of one of the function's parameters, or a function of its arguments.
PartitionOption = str | Callable[..., str] | None

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([smhd])\s*$")


def parse_rate(text: object) -> tuple[int, float]:
    """``"100/m"`` -> ``(100, 60.0)``: starts per period; ``N/s``, ``N/m``, ``N/h``, ``N/d``,
    with an optional multiplier (``"5/10s"``: five per ten seconds)."""
    if not isinstance(text, str):
        raise ConfigurationError(f'rate_limit must be a string such as "100/m", not {text!r}')
    match = _RATE.match(text)
    if match is None:
        raise ConfigurationError(
            f'rate_limit {text!r} is not a rate: write N/s, N/m, N/h or N/d (such as "100/m", '
            '"5/10s")'
        )
    count, multiplier, unit = match.groups()
    starts = int(count)
    if starts <= 0:
        raise ConfigurationError(f"rate_limit {text!r} must allow at least one start")
    per = (float(multiplier) if multiplier else 1.0) * _UNITS[unit]
    if per <= 0:
        raise ConfigurationError(f"rate_limit {text!r} needs a period longer than zero")
    return starts, per


@dataclass(frozen=True)
class WorkerLimits:
    """A worker type's cluster-wide limits, checked (see :func:`worker_limits`)."""

    #: At most this many running jobs of the type across all nodes (per partition).
    global_limit: int | None
    #: A parameter name or a function of the job's arguments; None: not partitioned.
    partition: str | Callable[..., Any] | None
    #: ``(starts, per seconds)`` or None.
    rate: tuple[int, float] | None
    #: The ``rate_limit`` string as given (for display).
    rate_text: str | None
    #: What the storage is told with each limited claim.
    storage_limits: Limits

    def describe(self) -> str:
        parts = []
        if self.global_limit is not None:
            parts.append(f"global_limit={self.global_limit}")
        if self.rate_text is not None:
            parts.append(f"rate_limit={self.rate_text}")
        if self.partition is not None:
            name = self.partition if isinstance(self.partition, str) else "function"
            parts.append(f"partition={name}")
        return " ".join(parts)


def worker_limits(
    fn: Callable[..., Any],
    worker: str,
    *,
    global_limit: object,
    partition: object,
    rate_limit: object,
    serial: bool,
) -> WorkerLimits | None:
    """The checked limits of a worker type, or None when it has none (no cost for it)."""
    if global_limit is None and partition is None and rate_limit is None:
        return None
    if serial:
        raise ConfigurationError(
            f"{worker}: serial=True runs one job at a time in strict order already; it does "
            "not combine with global_limit, rate_limit or partition"
        )
    if global_limit is not None and (
        isinstance(global_limit, bool) or not isinstance(global_limit, int) or global_limit <= 0
    ):
        raise ConfigurationError(
            f"{worker}: global_limit must be a positive int, not {global_limit!r}"
        )
    rate = None if rate_limit is None else parse_rate(rate_limit)
    if partition is not None:
        if global_limit is None and rate is None:
            raise ConfigurationError(
                f"{worker}: partition= splits a limit per key; give global_limit= or "
                "rate_limit= too"
            )
        _check_partition(fn, worker, partition)
    assert global_limit is None or isinstance(global_limit, int)
    return WorkerLimits(
        global_limit=global_limit,
        partition=partition,  # type: ignore[arg-type]
        rate=rate,
        rate_text=rate_limit if isinstance(rate_limit, str) else None,
        storage_limits=Limits(
            concurrency=global_limit,
            rate=rate[0] if rate else None,
            per=rate[1] if rate else None,
            partitioned=partition is not None,
        ),
    )


def _check_partition(fn: Callable[..., Any], worker: str, partition: object) -> None:
    if callable(partition):
        return
    if not isinstance(partition, str) or not partition.isidentifier():
        raise ConfigurationError(
            f"{worker}: partition must be a parameter name or a function of the job's "
            f"arguments, not {partition!r}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to read: the argument is looked up at enqueue
    kinds = {p.kind for p in signature.parameters.values()}
    if partition not in signature.parameters and inspect.Parameter.VAR_KEYWORD not in kinds:
        names = ", ".join(signature.parameters) or "none"
        raise ConfigurationError(
            f"{worker}: partition={partition!r} is not a parameter of it (parameters: {names})"
        )


def check_storage(storage: Storage, worker: str, limits: WorkerLimits) -> None:
    """Refuse limits the storage cannot apply (at registration, and when a worker starts)."""
    if LIMITS not in storage.capabilities:
        name = type(storage).__name__
        raise ConfigurationError(
            f"{worker}: {limits.describe()} needs the storage capability {LIMITS!r}, which "
            f"{name} does not declare"
        )


def partition_of(
    fn: Callable[..., Any] | None,
    worker: str,
    spec: str | Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> tuple[str | None, str | None]:
    """``(partition, dead_error)`` of one job: the key, or why it could not be had.

    A key over ``PARTITION_KEY_LIMIT`` UTF-8 bytes is hashed. Arguments that do not
    fit the function raise ``TypeError`` (nothing is stored, as for any enqueue).
    """
    if isinstance(spec, str):
        if fn is None:
            return None, f"partition {spec!r} of {worker}: the worker is not registered here"
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"the arguments do not fit {worker}: {exc}; nothing was stored"
            ) from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        for parameter in bound.signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                values.update(values.pop(parameter.name, {}))
        if spec not in values:
            return None, f"partition of {worker}: argument {spec!r} was not given"
        key: object = values[spec]
        if not isinstance(key, str):
            key = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
    else:
        try:
            key = spec(*args, **kwargs)
        except Exception as exc:
            return None, f"partition function of {worker} raised {type(exc).__name__}: {exc}"
    if not isinstance(key, str):
        return None, (
            f"partition of {worker} must be a str, not {type(key).__name__} ({key!r:.80})"
        )
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: no store takes them as text
        size = PARTITION_KEY_LIMIT + 1
    if size > PARTITION_KEY_LIMIT or "\0" in key:
        raw = key.encode("utf-8", "surrogatepass")
        return HASHED_KEY_PREFIX + hashlib.sha256(raw).hexdigest(), None
    return key, None
