"""Periodic jobs: a schedule's definition, its ticks, and how a due tick becomes a job.

A :class:`Schedule` names a worker type, the arguments of its job, and when it
ticks: a cron expression (parsed by ``cronsim``) in a time zone, or a fixed
interval (``every=``). Ticks are epoch seconds:

- cron: the times the expression matches in the schedule's zone (``zoneinfo``),
  with cronsim's DST rules (those of Debian's cron): on a spring-forward day a
  time in the skipped hour (02:30) runs once, right after the change (03:00);
  on a fall-back day a time in the repeated hour runs once, at its first
  occurrence. A six-field expression has seconds first.
- every: the multiples of the interval since the Unix epoch, so every node
  computes the same ticks whatever its start time (the zone is not used).

Firing (see :mod:`exqueue.runtime.scheduler`): the ticks *due* at ``now`` are
those after the stored last tick and at or before ``now``. Only the latest due
tick fires, once, through the store's atomic :meth:`fire`; the earlier ones
are *missed* (every node was down, or paused). ``missed="skip"`` (the default)
drops them; ``missed="run_once"`` passes their count to the one job as the
keyword argument ``missed`` (the job function must accept it). Either way
there is never a burst of missed ticks. A schedule with no stored tick starts
from the moment this process first looked at it: ticks before that are not due.

Each node publishes the definition of every schedule it fires with its
heartbeat (``NodeInfo.schedules``), so a reader holding only the storage URL
(the dashboard, ``exqueue schedules --storage``) computes the next fire with
the same tick rules (:func:`published_schedules`, :meth:`Published.schedule`).
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from exqueue.errors import ConfigurationError, ExqueueError
from exqueue.storage import SCHEDULE_NAME_LIMIT, NodeInfo, ScheduleSettings

Missed = Literal["skip", "run_once"]
MISSED_POLICIES: tuple[Missed, ...] = ("skip", "run_once")
#: A run_once job counts at most this many missed ticks (a longer outage reports this).
MISSED_COUNT_LIMIT = 10_000


class UnknownScheduleError(ExqueueError, LookupError):
    """No schedule of that name is registered on the queue or stored."""


@dataclass(frozen=True)
class Schedule:
    """One registered schedule (built by ``Queue.schedule`` / ``Queue.periodic``)."""

    name: str
    worker: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    cron: str | None
    every: float | None
    zone: ZoneInfo
    missed: Missed
    #: The call's job options (``fn.options(...).call()``), applied to every tick's job.
    options: Any = None

    @property
    def pass_missed(self) -> bool:
        """run_once: the job gets the keyword ``missed``."""
        return self.missed == "run_once"

    @property
    def expression(self) -> str:
        """The cron expression, or ``every <seconds>s``."""
        return self.cron if self.cron is not None else f"every {self.every:g}s"

    def ticks_after(self, after: float) -> Iterator[float]:
        """Ticks strictly after ``after``, ascending, forever."""
        if self.every is not None:
            step = self.every
            k = math.floor(after / step) + 1
            while True:
                tick = k * step
                if tick > after:  # float rounding: never yield a tick at or before ``after``
                    yield tick
                k += 1
        assert self.cron is not None
        start = dt.datetime.fromtimestamp(math.floor(after), self.zone)
        last = after
        for when in CronSim(self.cron, start):
            tick = when.timestamp()
            if tick > last:
                last = tick
                yield tick

    def next_after(self, after: float) -> float:
        return next(self.ticks_after(after))

    def due(self, after: float, now: float) -> tuple[float | None, int]:
        """The latest tick in ``(after, now]`` and how many ticks that span holds.

        The count stops at :data:`MISSED_COUNT_LIMIT`; past it the latest tick is
        found by going back from ``now``.
        """
        if self.every is not None:
            step = self.every
            k = math.floor(now / step)
            latest = k * step
            if latest > now:
                k -= 1
                latest = k * step
            if latest <= after:
                return None, 0
            count = k - math.floor(after / step)
            return latest, max(1, min(count, MISSED_COUNT_LIMIT))
        found: float | None = None
        count = 0
        for tick in self.ticks_after(after):
            if tick > now:
                return found, count
            found, count = tick, count + 1
            if count >= MISSED_COUNT_LIMIT:
                break
        assert self.cron is not None
        # A very long span: the latest tick at or before ``now``, going backwards.
        start = dt.datetime.fromtimestamp(now, self.zone) + dt.timedelta(microseconds=1)
        latest = next(iter(CronSim(self.cron, start, reverse=True))).timestamp()
        return max(latest, found or latest), count


def upcoming(schedule: Schedule, last: float | None, now: float) -> float:
    """When a node next fires ``schedule``: its latest due tick if one is due, else the next."""
    due, _ = schedule.due(last, now) if last is not None else (None, 0)
    return due if due is not None else schedule.next_after(now)


@dataclass(frozen=True)
class Published:
    """One distinct definition of a schedule and the live nodes publishing it."""

    definition: ScheduleSettings
    nodes: tuple[str, ...]

    def schedule(self, name: str) -> Schedule:
        """The definition as a :class:`Schedule` (no arguments: they are not published)."""
        d = self.definition
        missed: Missed = "run_once" if d.missed == "run_once" else "skip"
        return Schedule(name, d.worker, (), {}, d.cron, d.every, ZoneInfo(d.zone), missed)

    def to_dict(self) -> dict[str, Any]:
        return {**self.definition.as_json(), "nodes": list(self.nodes)}


def published_schedules(nodes: Iterable[NodeInfo]) -> dict[str, tuple[Published, ...]]:
    """Each schedule the ``nodes`` publish: its distinct definitions, the one most
    nodes publish first (then by the first node's name)."""
    found: dict[str, dict[ScheduleSettings, list[str]]] = {}
    for node in nodes:
        for name, definition in node.schedules.items():
            found.setdefault(name, {}).setdefault(definition, []).append(node.name)
    return {
        name: tuple(
            sorted(
                (Published(d, tuple(sorted(names))) for d, names in variants.items()),
                key=lambda p: (-len(p.nodes), p.nodes),
            )
        )
        for name, variants in found.items()
    }


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as ``queue.schedules()`` shows it.

    The definition (``expression``, ``zone``, ``missed``, ``worker``) is this
    queue's registration, else the one most live nodes publish; all None for a
    schedule stored but neither registered here nor published by a live node (a
    removed or renamed one). ``next_fire`` is when a node will next fire it: the
    latest due tick if one is due, else the next tick; the earliest over the
    definitions live nodes publish, as each node fires its own (this queue's
    registration when no live node publishes it). ``live``: a live node
    publishes it (None: the store keeps no nodes); ``published``: each distinct
    definition live nodes publish, with their names (more than one: the nodes
    disagree); ``silent_nodes``: live nodes of an exqueue from before schedules
    were published, which may fire it unseen.
    """

    name: str
    expression: str | None
    zone: str | None
    missed: Missed | None
    next_fire: dt.datetime | None
    last_tick: dt.datetime | None
    paused: bool
    registered: bool
    worker: str | None = None
    live: bool | None = None
    published: tuple[Published, ...] = ()
    silent_nodes: tuple[str, ...] = ()

    @property
    def disagree(self) -> bool:
        """Live nodes publish different definitions of it."""
        return len(self.published) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expression": self.expression,
            "zone": self.zone,
            "missed": self.missed,
            "next_fire": self.next_fire.isoformat() if self.next_fire else None,
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,
            "paused": self.paused,
            "registered": self.registered,
            "worker": self.worker,
            "live": self.live,
            "published": [p.to_dict() for p in self.published],
            "silent_nodes": list(self.silent_nodes),
        }


def build_schedule(
    name: str,
    when: str | dt.timedelta | None,
    *,
    every: dt.timedelta | float | None,
    worker: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    tz: str | ZoneInfo,
    missed: str,
    options: Any = None,
) -> Schedule:
    """A checked :class:`Schedule`; every problem is a ``ConfigurationError`` naming it."""
    label = f"schedule {name!r}" if isinstance(name, str) else "a schedule"

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{label}: {problem}; nothing was registered")

    if not isinstance(name, str) or not name.strip():
        raise bad(f"the name must be a non-empty string, not {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > SCHEDULE_NAME_LIMIT:
        raise bad(f"the name takes more than {SCHEDULE_NAME_LIMIT} UTF-8 bytes")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise bad("the name contains a control character")
    if isinstance(when, dt.timedelta):
        if every is not None:
            raise bad("give the interval once (as the second argument or every=)")
        when, every = None, when
    if (when is None) == (every is None):
        raise bad("give either a cron expression or every= (an interval), not both or neither")
    zone = _zone(tz, bad)
    cron: str | None = None
    seconds: float | None = None
    if when is not None:
        if not isinstance(when, str):
            raise bad(f"the cron expression must be a string, not {when!r}")
        cron = " ".join(when.split())
        try:
            CronSim(cron, dt.datetime.now(zone))
        except (CronSimError, ValueError, IndexError) as exc:
            raise bad(f"invalid cron expression {when!r}: {exc or type(exc).__name__}") from None
    else:
        if isinstance(every, dt.timedelta):
            seconds = every.total_seconds()
        elif isinstance(every, int | float) and not isinstance(every, bool):
            seconds = float(every)
        else:
            raise bad(f"every= must be a timedelta or a number of seconds, not {every!r}")
        if not math.isfinite(seconds) or seconds <= 0:
            raise bad(f"the interval must be above zero, not {every!r}")
    if missed not in MISSED_POLICIES:
        raise bad(f"missed must be one of {', '.join(MISSED_POLICIES)}, not {missed!r}")
    if missed == "run_once":
        if not _takes_missed(fn):
            raise bad(
                "missed='run_once' passes the count of missed ticks as the keyword argument "
                f"'missed', which {getattr(fn, '__qualname__', fn)!r} does not take"
            )
        if "missed" in kwargs:
            raise bad("its call sets 'missed', which run_once passes to the job itself")
    policy: Missed = "run_once" if missed == "run_once" else "skip"
    return Schedule(name, worker, tuple(args), dict(kwargs), cron, seconds, zone, policy, options)


def _zone(tz: str | ZoneInfo, bad: Callable[[str], ConfigurationError]) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise bad(f"tz must be a zone name such as 'Europe/Stockholm', not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise bad(f"unknown time zone {tz!r} (an IANA name such as 'Europe/Stockholm')") from None


def _takes_missed(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    param = parameters.get("missed")
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def as_datetime(tick: float | None, zone: ZoneInfo | None = None) -> dt.datetime | None:
    if tick is None:
        return None
    return dt.datetime.fromtimestamp(tick, zone or dt.UTC)
