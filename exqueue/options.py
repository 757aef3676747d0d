"""Job options (protocol 2): priority, uniqueness, meta, timeout and expiry.

A worker type sets defaults (``@queue.worker(priority=..., unique=...)``); one
enqueue sets its own through ``fn.options(...)`` or ``Call(options=...)``, so no
option ever takes the name of a job keyword. This module checks every option
where it enters (a clear error, nothing stored), merges a worker type's
defaults with an enqueue's options, derives unique keys from arguments, and
names the storage capability each option needs.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import inspect
import json
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypedDict, Unpack

from exqueue._frozen import cheap_init
from exqueue.errors import ConfigurationError, InvalidScheduleError
from exqueue.guards import MAX_DELAY, check_delay, check_run_at, check_seconds, is_real
from exqueue.storage import (
    EXPIRY,
    META_BYTES_LIMIT,
    META_ENTRIES_LIMIT,
    METADATA,
    PRIORITY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    STATES,
    UNIQUE,
    UNIQUE_KEY_LIMIT,
    WAITING,
    JobState,
    Storage,
    Unique,
)

Seconds = float | int | dt.timedelta
When = dt.datetime | float | int

#: A derived key longer than the stored limit is replaced by this prefix and a digest.
HASHED_KEY_PREFIX = "sha256:"


# -- single values ------------------------------------------------------------------------


def check_priority(value: object) -> int:
    """A priority: an int (not a bool) within 32 bits; lower runs first."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"priority must be an integer, not {value!r}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ConfigurationError(
            f"priority must be from {PRIORITY_MIN} to {PRIORITY_MAX} (32 bits), not {value!r}"
        )
    return value


def _text_problem(what: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string, not {type(value).__name__} ({value!r})"
    if "\0" in value:
        return f"{what} must not contain the NUL character: {value!r}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} must be valid Unicode text (no lone surrogates): {value!r}"
    return None


def check_unique_key(key: object) -> str:
    """An explicit unique key: non-empty text of at most ``UNIQUE_KEY_LIMIT`` UTF-8 bytes."""
    problem = _text_problem("a unique key", key)
    if problem is not None:
        raise ConfigurationError(problem)
    assert isinstance(key, str)
    if not key:
        raise ConfigurationError("a unique key must not be empty")
    size = len(key.encode("utf-8"))
    if size > UNIQUE_KEY_LIMIT:
        raise ConfigurationError(
            f"a unique key must be at most {UNIQUE_KEY_LIMIT} UTF-8 bytes, not {size} "
            f"({key[:40]!r}...); use a shorter key or unique=exqueue.Uniqueness(args=[...])"
        )
    return key


def check_meta(meta: object) -> dict[str, str]:
    """``meta``: a str -> str mapping within ``META_ENTRIES_LIMIT`` and ``META_BYTES_LIMIT``."""
    if not isinstance(meta, Mapping):
        raise ConfigurationError(f"meta must be a mapping of str to str, not {meta!r}")
    if len(meta) > META_ENTRIES_LIMIT:
        raise ConfigurationError(
            f"meta may have at most {META_ENTRIES_LIMIT} entries, not {len(meta)}"
        )
    size = 0
    for key, value in meta.items():
        problem = _text_problem("a meta key", key) or _text_problem(f"meta[{key!r}]", value)
        if problem is not None:
            raise ConfigurationError(problem)
        if not key:
            raise ConfigurationError("a meta key must not be empty")
        size += len(key.encode("utf-8")) + len(value.encode("utf-8"))
    if size > META_BYTES_LIMIT:
        raise ConfigurationError(
            f"meta may take at most {META_BYTES_LIMIT} UTF-8 bytes (keys and values), not {size}"
        )
    return dict(meta)


def to_seconds(what: str, value: object, *, positive: bool = True) -> float:
    """A duration given as seconds or a ``timedelta``."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    return check_seconds(what, value, positive=positive)


def to_epoch(what: str, value: object) -> float:
    """A point in time given as a ``datetime`` (naive is local time) or epoch seconds."""
    if isinstance(value, dt.datetime):
        try:
            return value.timestamp()
        except (OverflowError, ValueError, OSError) as exc:
            raise InvalidScheduleError(f"{what}={value!r} is out of range: {exc}") from None
    if not is_real(value):
        raise ConfigurationError(f"{what} must be a datetime or epoch seconds, not {value!r}")
    when = float(value)  # type: ignore[arg-type]
    if not math.isfinite(when):
        raise InvalidScheduleError(f"{what} must be a finite time, not {value!r}")
    return when


# -- uniqueness ----------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class Uniqueness:
    """How jobs of a worker type are told apart as duplicates.

    ``key``: an explicit key; or ``args``: the names of the parameters the key
    is derived from (bound through the function's signature, so positional and
    keyword spellings give one key); neither: every argument. ``states``: the
    states in which a stored job holds the key (``waiting`` always does;
    default waiting and running; add ``"dead"`` to hold it while dead).
    ``period`` (seconds or a timedelta): a completed job still holds its key
    for this long after it completed.
    """

    key: str | None
    args: tuple[str, ...] | None
    states: frozenset[JobState]
    period: float | None

    def __init__(
        self,
        key: str | None = None,
        *,
        args: Iterable[str] | str | None = None,
        states: Iterable[str] = ("waiting", "running"),
        period: Seconds | None = None,
    ) -> None:
        if key is not None and args is not None:
            raise ConfigurationError("Uniqueness takes a key or args, not both")
        if key is not None:
            key = check_unique_key(key)
        names: tuple[str, ...] | None = None
        if args is not None:
            names = (args,) if isinstance(args, str) else tuple(args)
            for name in names:
                if not isinstance(name, str) or not name.isidentifier():
                    raise ConfigurationError(
                        f"Uniqueness(args=...) takes parameter names, not {name!r}"
                    )
            if not names:
                raise ConfigurationError("Uniqueness(args=...) needs at least one parameter name")
        if isinstance(states, str):
            states = (states,)
        chosen = set(states)
        for state in chosen:
            if state not in STATES:
                raise ConfigurationError(
                    f"Uniqueness(states=...) takes {', '.join(STATES)}, not {state!r}"
                )
        held: frozenset[JobState] = frozenset(s for s in STATES if s in chosen or s == WAITING)
        seconds = None if period is None else to_seconds("Uniqueness(period)", period)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "args", names)
        object.__setattr__(self, "states", held)
        object.__setattr__(self, "period", seconds)


UniqueOption = bool | str | Uniqueness | None


def check_unique(value: object) -> Uniqueness | Literal[False] | None:
    """``unique=``: True (every argument), a key, a :class:`Uniqueness`, False (not unique)."""
    if value is None:
        return None
    if value is True:
        return Uniqueness()
    if value is False:
        return False
    if isinstance(value, str):
        return Uniqueness(value)
    if isinstance(value, Uniqueness):
        return value
    raise ConfigurationError(
        f"unique must be True, a key (str), an exqueue.Uniqueness or False, not {value!r}"
    )


def _stable(value: object) -> object:
    """JSON for values whose text is stable; everything else is refused by the caller."""
    if isinstance(value, dt.datetime | dt.date | dt.time | dt.timedelta | decimal.Decimal):
        return {f"${type(value).__name__}": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=json.dumps)
    raise TypeError(type(value).__name__)


def _canonical(value: object) -> object:
    return json.loads(_encode(value))


def _encode(value: object) -> str:
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
        default=_stable,
    )


def derive_key(
    fn: Callable[..., Any] | None,
    worker: str,
    uniqueness: Uniqueness,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> str:
    """The unique key of a call: explicit, or the chosen arguments' stable encoding.

    Arguments are bound through ``fn``'s signature with defaults applied, so
    ``f(1)``, ``f(x=1)`` and ``f(1, lang="en")`` (``lang`` defaulting to "en")
    share a key. An encoding over ``UNIQUE_KEY_LIMIT`` bytes is hashed.
    """
    if uniqueness.key is not None:
        return uniqueness.key
    if fn is None:
        raise ConfigurationError(
            f"a unique key derived from arguments needs the worker function, and {worker!r} "
            "is not registered on this queue; give an explicit key (unique='...')"
        )
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"the arguments do not fit {worker}: {exc}; nothing was stored") from None
    bound.apply_defaults()
    values = bound.arguments
    if uniqueness.args is not None:
        # A name that is no parameter may be a keyword caught by ``**kwargs``
        # (absent: None, so the key still has one shape).
        extra = _var_keyword(bound.signature)
        caught = values.get(extra, {}) if extra is not None else None
        missing = [n for n in uniqueness.args if n not in values and caught is None]
        if missing:
            raise ConfigurationError(
                f"the unique key of {worker} names {', '.join(map(repr, missing))}, "
                f"which is not a parameter of it (parameters: {', '.join(values) or 'none'})"
            )
        values = {
            name: values[name] if name in values else (caught or {}).get(name)
            for name in uniqueness.args
        }
    try:
        text = _encode(dict(values))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"the unique key of {worker} is derived from its arguments, which must then be "
            f"JSON values, dates, decimals or UUIDs ({exc}); give an explicit key or choose "
            "other arguments with exqueue.Uniqueness(args=[...])"
        ) from None
    if len(text) > UNIQUE_KEY_LIMIT:  # ASCII: one byte per character
        return HASHED_KEY_PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()
    return text


def _var_keyword(signature: inspect.Signature) -> str | None:
    """The name of the ``**kwargs`` parameter, if any."""
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return parameter.name
    return None


def check_unique_args(fn: Callable[..., Any], worker: str, uniqueness: Uniqueness) -> None:
    """At registration: every name in ``Uniqueness(args=...)`` is a parameter of ``fn``."""
    if uniqueness.args is None:
        return
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return  # no signature to read: checked when a job is enqueued
    if _var_keyword(inspect.signature(fn)) is not None:
        return  # any name may come through **kwargs
    missing = [name for name in uniqueness.args if name not in parameters]
    if missing:
        raise ConfigurationError(
            f"the unique key of {worker} names {', '.join(map(repr, missing))}, which is "
            f"not a parameter of it (parameters: {', '.join(parameters) or 'none'})"
        )


# -- option sets ---------------------------------------------------------------------------


class OptionArgs(TypedDict, total=False):
    """The per-enqueue options as keywords: the one place that names them.

    ``JobOptions(**options)``, ``fn.options(**options)`` and
    ``fn.options(...).options(**options)`` all take these; see
    :class:`JobOptions` for what each means. None leaves an option unset.
    """

    priority: int | None
    unique: UniqueOption
    meta: Mapping[str, str] | None
    timeout: Seconds | None
    expires_in: Seconds | None
    expires_at: When | None
    delay: Seconds | None
    run_at: When | None


#: The option names, in the order :class:`OptionArgs` declares them.
OPTION_NAMES: tuple[str, ...] = tuple(OptionArgs.__annotations__)


@dataclass(frozen=True, init=False)
class JobOptions:
    """Options of one enqueue (``fn.options(...)``, ``Call(options=...)``), or a
    worker type's defaults. None leaves an option to the worker type's default.

    ``priority``: an int, lower runs first (default 0). ``unique``: True (key
    from every argument), a key, an :class:`Uniqueness`, or False (not unique,
    even if the worker type is). ``meta``: a small str -> str mapping (merged
    over the worker type's). ``timeout``: seconds one attempt may run.
    ``expires_in`` / ``expires_at``: a job not started by then is never run; it
    dies with the reason "expired". ``delay`` / ``run_at``: when it may start.
    The keywords are declared once, in :class:`OptionArgs`.
    """

    priority: int | None
    unique: Uniqueness | Literal[False] | None
    meta: Mapping[str, str] | None
    timeout: float | None
    expires_in: float | None
    expires_at: float | None
    delay: float | None
    run_at: float | None

    def __init__(self, **options: Unpack[OptionArgs]) -> None:
        for name in options:
            if name not in OPTION_NAMES:
                # What an explicit keyword signature would raise, naming the choices.
                raise TypeError(
                    f"unexpected job option {name!r} (options: {', '.join(OPTION_NAMES)})"
                )
        priority = options.get("priority")
        meta = options.get("meta")
        timeout = options.get("timeout")
        expires_in, expires_at = options.get("expires_in"), options.get("expires_at")
        delay, run_at = options.get("delay"), options.get("run_at")
        if expires_in is not None and expires_at is not None:
            raise ConfigurationError("give expires_in or expires_at, not both")
        if delay is not None and run_at is not None:
            raise ConfigurationError("give delay or run_at, not both")
        if isinstance(delay, dt.timedelta):
            delay = delay.total_seconds()
        values = {
            "priority": None if priority is None else check_priority(priority),
            "unique": check_unique(options.get("unique")),
            # Read-only: one options object may serve many enqueues.
            "meta": None if meta is None else MappingProxyType(check_meta(meta)),
            "timeout": None if timeout is None else to_seconds("timeout", timeout),
            "expires_in": None if expires_in is None else to_seconds("expires_in", expires_in),
            "expires_at": None if expires_at is None else to_epoch("expires_at", expires_at),
            "delay": None if delay is None else check_delay(delay),
            "run_at": None if run_at is None else to_epoch("run_at", run_at),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def merged(self, over: JobOptions | None) -> JobOptions:
        """These options with ``over``'s set ones taking precedence (meta merged by key)."""
        if over is None:
            return self
        result = JobOptions()
        for name in ("priority", "unique", "timeout", "delay", "run_at"):
            mine, theirs = getattr(self, name), getattr(over, name)
            object.__setattr__(result, name, theirs if theirs is not None else mine)
        if over.expires_in is not None or over.expires_at is not None:
            expires: tuple[float | None, float | None] = (over.expires_in, over.expires_at)
        else:
            expires = (self.expires_in, self.expires_at)
        object.__setattr__(result, "expires_in", expires[0])
        object.__setattr__(result, "expires_at", expires[1])
        meta = None
        if self.meta is not None or over.meta is not None:
            meta = MappingProxyType(check_meta({**(self.meta or {}), **(over.meta or {})}))
        object.__setattr__(result, "meta", meta)
        return result

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in OPTION_NAMES)


def worker_defaults(
    fn: Callable[..., Any],
    worker: str,
    *,
    priority: int | None,
    unique: UniqueOption,
    meta: Mapping[str, str] | None,
    timeout: Seconds | None,
    expires_in: Seconds | None,
) -> JobOptions | None:
    """A worker type's default options, or None when it has none (the fast path)."""
    defaults = JobOptions(
        priority=priority, unique=unique, meta=meta, timeout=timeout, expires_in=expires_in
    )
    # What equals no default keeps the worker type on the fast path.
    if defaults.priority == 0:
        object.__setattr__(defaults, "priority", None)
    if defaults.unique is False:
        object.__setattr__(defaults, "unique", None)
    if defaults.meta is not None and not defaults.meta:
        object.__setattr__(defaults, "meta", None)
    if isinstance(defaults.unique, Uniqueness):
        check_unique_args(fn, worker, defaults.unique)
    return None if defaults.is_empty() else defaults


# -- applying them -------------------------------------------------------------------------


@cheap_init
@dataclass(frozen=True, slots=True)
class Resolved:
    """What options decide for one new job (the fields of ``NewJob`` they set)."""

    run_at: float
    priority: int
    meta: Mapping[str, str]
    timeout: float | None
    expires_at: float | None
    unique: Unique | None


def resolve(
    options: JobOptions,
    *,
    fn: Callable[..., Any] | None,
    worker: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    run_at: float | None,
    delay: float,
    now: float,
    storage: Storage,
) -> Resolved:
    """Apply ``options`` (a worker type's defaults merged with an enqueue's) to one job.

    Raises before anything is stored: an expiry that is past or before the job
    may start, or an option whose capability the storage does not declare.
    """
    if options.run_at is not None or options.delay is not None:
        if run_at is not None or delay:
            raise ConfigurationError(
                "the job's start is given twice (Call delay/run_at and options delay/run_at)"
            )
        run_at, delay = options.run_at, options.delay or 0.0
    start = (
        check_run_at(run_at, now)
        if run_at is not None
        else now + (0.0 if delay == 0 else max(check_delay(delay), 0.0))
    )
    expires_at = options.expires_at
    if options.expires_in is not None:
        expires_at = now + options.expires_in
    if expires_at is not None:
        if expires_at <= now:
            raise InvalidScheduleError(
                f"the job would expire in the past ({_iso(expires_at)}, now {_iso(now)}); "
                "nothing was stored"
            )
        if expires_at <= start:
            raise InvalidScheduleError(
                f"the job would expire ({_iso(expires_at)}) before it may start "
                f"({_iso(start)}); nothing was stored"
            )
        if expires_at - now > MAX_DELAY:
            raise InvalidScheduleError("expires_at must be within 100 years of now")
    unique = None
    if options.unique:
        uniqueness = options.unique
        key = derive_key(fn, worker, uniqueness, args, kwargs)
        unique = Unique(key, uniqueness.states, uniqueness.period)
    resolved = Resolved(
        run_at=start,
        priority=options.priority or 0,
        meta=dict(options.meta) if options.meta else {},  # each job its own (backends may keep it)
        timeout=options.timeout,
        expires_at=expires_at,
        unique=unique,
    )
    check_capabilities(resolved, storage)
    return resolved


def needed_capabilities(resolved: Resolved) -> list[tuple[str, str]]:
    """``(option, capability)`` for each option set on a job."""
    needed = []
    if resolved.priority != 0:
        needed.append(("priority", PRIORITY))
    if resolved.meta:
        needed.append(("meta", METADATA))
    if resolved.timeout is not None:
        needed.append(("timeout", METADATA))
    if resolved.unique is not None:
        needed.append(("unique", UNIQUE))
    if resolved.expires_at is not None:
        needed.append(("expiry", EXPIRY))
    return needed


def check_capabilities(resolved: Resolved, storage: Storage) -> None:
    declared = storage.capabilities
    for option, capability in needed_capabilities(resolved):
        if capability not in declared:
            refuse(option, capability, storage)


def refuse(option: str, capability: str, storage: Storage) -> None:
    name = type(storage).__name__
    raise ConfigurationError(
        f"the {option} option needs the storage capability {capability!r}, which {name} "
        f"does not declare (it declares: {', '.join(sorted(storage.capabilities)) or 'none'}); "
        "nothing was stored"
    )


def _iso(epoch: float) -> str:
    try:
        return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return repr(epoch)


def check_default_capabilities(defaults: JobOptions, storage: Storage) -> None:
    """At registration: refuse worker-type defaults the storage cannot honour."""
    declared = storage.capabilities
    needed = [
        ("priority", PRIORITY, bool(defaults.priority)),
        ("meta", METADATA, bool(defaults.meta)),
        ("timeout", METADATA, defaults.timeout is not None),
        ("unique", UNIQUE, bool(defaults.unique)),
        ("expiry", EXPIRY, defaults.expires_in is not None),
    ]
    for option, capability, wanted in needed:
        if wanted and capability not in declared:
            refuse(option, capability, storage)
