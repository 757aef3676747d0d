"""Optional storage capabilities: the protocols a backend may implement beyond :class:`Storage`.

A backend declares each one it implements by name in ``capabilities`` (the
constants here and in :mod:`exqueue.storage`); the core checks the name, never
the methods, and refuses what needs a capability a store does not declare. Each
protocol comes with its parameter objects and the checks backends share.

Every name here is re-exported by :mod:`exqueue.storage`, so backends and
applications import the whole protocol from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from exqueue.storage import NewJob

# The capability names of the first four protocols (WAKEUP, TRANSACTIONAL_ENQUEUE,
# COMPLETE_MANY, SERVER_CLOCK) stand with the protocol-2 ones in exqueue.storage.


@runtime_checkable
class SupportsWakeup(Protocol):
    """Optional capability :data:`WAKEUP`: block until a job may be runnable."""

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when a job may have become runnable.

        A transition that makes a job runnable (enqueue, retry, release, requeue,
        recover) wakes the wait; one made between two waits of a thread counts
        for the next. True may be spurious (the caller then finds nothing to
        claim); False means no such transition was seen before the timeout.
        """
        ...


@runtime_checkable
class SupportsTransactionalEnqueue(Protocol):
    """Optional capability :data:`TRANSACTIONAL_ENQUEUE`: enqueue in the caller's transaction."""

    def enqueue_in(self, transaction: object, jobs: Sequence[NewJob]) -> list[str] | None:
        """Persist ``jobs`` through the caller's open transaction (commits with it).

        Returns the holder ids as :meth:`Storage.enqueue` does; None (as a
        version-1 backend returns) means every job was stored."""
        ...


@runtime_checkable
class SupportsCompleteMany(Protocol):
    """Optional capability :data:`COMPLETE_MANY`: record many successes in one atomic step.

    The core batches acknowledgements that arrive while a previous batch is being
    written, so a backend with a costly commit (an fsync, a round trip) records
    many successes for the price of one.
    """

    def complete_many(
        self, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> list[str]:
        """``complete(job_id, token, now=now)`` for each pair, atomically; the ids removed."""
        ...


@runtime_checkable
class SupportsServerClock(Protocol):
    """Optional capability :data:`SERVER_CLOCK`: the storage server's own time.

    Backends never use it for transitions (those take ``now``); the runtime
    compares it with its clock to stop a node whose clock is off from claiming
    and recovering, where its ``now`` would take other nodes' live jobs or none.
    """

    def server_time(self) -> float:
        """The server's clock now, in seconds since the epoch (a float)."""
        ...


# -- schedules (issue 14) -------------------------------------------------------------

#: Implements :class:`SupportsSchedules`: records a schedule's tick atomically with its job.
SCHEDULES = "schedules"
#: The most UTF-8 bytes of a schedule name.
SCHEDULE_NAME_LIMIT: Final = 255


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What a store keeps of one schedule: the last tick recorded and whether it is paused.

    ``last_tick`` is None until a tick is recorded (a schedule paused before its
    first tick has a state too).
    """

    name: str
    last_tick: float | None = None
    paused: bool = False


@runtime_checkable
class SupportsSchedules(Protocol):
    """Optional capability :data:`SCHEDULES`: periodic jobs fired exactly once per tick.

    A schedule is a name; its ticks are epoch seconds the core computes from the
    schedule's cron expression or interval. Every node may try to fire the same
    tick; the store lets one through. Ticks only move forward: a tick at or
    before the recorded one records nothing. The job is stored in the same
    atomic (and durable) step as the tick, so a process killed right after
    ``fire`` returned loses neither, and one killed before recorded neither.
    """

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        """Store ``job`` and record ``tick`` as the schedule's last tick, atomically.

        Only when ``tick`` is later than the recorded last tick (or none is
        recorded). A paused schedule records the tick but stores no job (its
        ticks pass, so a resume fires only later ticks). True when the job was
        stored; False when nothing was stored (an older or equal tick, or
        paused). A job id already stored raises ``ValueError`` and records nothing.
        """
        ...

    def schedules(self) -> list[ScheduleState]:
        """Every stored schedule state, ordered by name."""
        ...

    def pause_schedule(self, schedule: str, paused: bool) -> None:
        """Set whether ``schedule`` is paused (its state is created when missing)."""
        ...


# -- live nodes and outcome history (issue 17) -----------------------------------------

#: Implements :class:`SupportsNodes`: worker processes register with a heartbeat.
NODES = "nodes"
#: Implements :class:`SupportsHistory`: per-minute outcome counts per worker type.
HISTORY = "history"
#: The most UTF-8 bytes of a node name (and of its host).
NODE_NAME_LIMIT: Final = 255


#: The most UTF-8 bytes of a worker type's backoff description in :class:`TypeSettings`.
BACKOFF_TEXT_LIMIT: Final = 255


@dataclass(frozen=True, slots=True)
class TypeSettings:
    """A worker type's settings as one node registered them, published with its heartbeat.

    So that a reader holding only the storage URL (the dashboard) knows a type's
    limits and whether it is serial. ``concurrency`` is per node; ``global_limit``
    (running jobs across the cluster, per partition when ``partitioned``) and
    ``rate`` starts per ``per`` seconds are cluster-wide; None: no such limit.
    ``timeout`` is the type's default seconds per attempt (None: none);
    ``backoff`` a short description of its retry delays.
    """

    concurrency: int = 1
    serial: bool = False
    is_async: bool = False
    global_limit: int | None = None
    rate: int | None = None
    per: float | None = None
    partitioned: bool = False
    timeout: float | None = None
    max_attempts: int = 1
    backoff: str = ""

    def as_json(self) -> dict[str, object]:
        """The settings as a JSON object (what backends store)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TypeSettings:
        """Settings read back from :meth:`as_json`'s object; keys it does not know
        (written by a later version) are ignored, missing ones take the defaults."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def types_as_json(types: Mapping[str, TypeSettings]) -> dict[str, dict[str, object]]:
    """A node's ``types`` as one JSON object (what backends store)."""
    return {name: settings.as_json() for name, settings in sorted(types.items())}


def types_from_json(data: object) -> dict[str, TypeSettings]:
    """A node's stored ``types`` object back as settings. Nothing stored (a node
    written before the field existed) reads as empty; a damaged entry (not an
    object, or settings :func:`settings_problem` refuses) is left out rather
    than failing the whole read."""
    if not isinstance(data, Mapping):
        return {}
    found = {}
    for name, value in data.items():
        if isinstance(value, Mapping):
            settings = TypeSettings.from_json(value)
            if settings_problem(settings) is None:
                found[str(name)] = settings
    return found


#: The most UTF-8 bytes of a published schedule's cron expression and of its zone name.
SCHEDULE_TEXT_LIMIT: Final = 255


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """A schedule's definition as one node registered it, published with its heartbeat.

    So that a reader holding only the storage URL (the dashboard, ``exqueue
    schedules``) can compute its next fire: ``cron`` (read in ``zone``, an IANA
    name) or ``every`` seconds, exactly one of them; ``missed`` is the policy
    (``"skip"`` or ``"run_once"``); ``worker`` the type of its jobs. The job's
    arguments are not published (they may hold anything).
    """

    worker: str = ""
    cron: str | None = None
    every: float | None = None
    zone: str = "UTC"
    missed: str = "skip"

    @property
    def expression(self) -> str:
        """The cron expression, or ``every <seconds>s`` (as ``Schedule.expression``)."""
        return self.cron if self.cron is not None else f"every {self.every:g}s"

    def as_json(self) -> dict[str, object]:
        """The definition as a JSON object (what backends store)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduleSettings:
        """A definition read back from :meth:`as_json`'s object (unknown keys ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def schedules_as_json(schedules: Mapping[str, ScheduleSettings]) -> dict[str, dict[str, object]]:
    """A node's ``schedules`` as one JSON object (what backends store)."""
    return {name: settings.as_json() for name, settings in sorted(schedules.items())}


def schedules_from_json(data: object) -> dict[str, ScheduleSettings]:
    """A node's stored ``schedules`` back as definitions: nothing stored (a node of an
    exqueue from before they were published) reads as empty, and a damaged entry is
    left out rather than failing the whole read (as :func:`types_from_json`)."""
    if not isinstance(data, Mapping):
        return {}
    found = {}
    for name, value in data.items():
        if isinstance(value, Mapping):
            try:
                settings = ScheduleSettings.from_json(value)
            except TypeError:
                continue
            if schedule_settings_problem(settings) is None:
                found[str(name)] = settings
    return found


def _text(value: object, what: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"{what} must be a non-empty string, not {value!r}"
    if len(value.encode("utf-8", "surrogatepass")) > SCHEDULE_TEXT_LIMIT:
        return f"{what} takes at most {SCHEDULE_TEXT_LIMIT} UTF-8 bytes"
    return None


def schedule_settings_problem(settings: object) -> str | None:
    """Why ``settings`` cannot be stored as a :class:`ScheduleSettings` (None: valid).

    The cron expression must parse and the zone must be one this process knows,
    so that every reader can compute the next fire from what is stored."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from cronsim import CronSim, CronSimError

    if not isinstance(settings, ScheduleSettings):
        return f"a schedule's settings must be a ScheduleSettings, not {type(settings).__name__}"
    s = settings
    problem = _text(s.worker, "worker") or _text(s.zone, "zone")
    if problem is not None:
        return problem
    if (s.cron is None) == (s.every is None):
        return "give exactly one of cron and every"
    if s.every is not None and not _is_seconds(s.every):
        return f"every must be a positive finite number of seconds, not {s.every!r}"
    if s.missed not in ("skip", "run_once"):
        return f"missed must be 'skip' or 'run_once', not {s.missed!r}"
    try:
        zone = ZoneInfo(s.zone)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return f"unknown time zone {s.zone!r}"
    if s.cron is not None:
        problem = _text(s.cron, "cron")
        if problem is not None:
            return problem
        try:
            CronSim(s.cron, dt.datetime.now(zone))
        except (CronSimError, ValueError, IndexError):
            return f"invalid cron expression {s.cron!r}"
    return None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One worker process as it last told the store (``beat_node``).

    ``workers`` maps each worker type it runs to its concurrency; ``running``
    is how many jobs it held at ``seen_at`` (the ``now`` of its last beat);
    ``types`` maps each worker type it runs to its settings, ``schedules`` each
    schedule it fires to its definition (both empty from a node of an exqueue
    from before they were published; ``schedules`` also from a node that fires
    none, e.g. ``exqueue worker --no-schedules``).
    """

    name: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    workers: Mapping[str, int] = field(default_factory=dict)
    running: int = 0
    types: Mapping[str, TypeSettings] = field(default_factory=dict)
    schedules: Mapping[str, ScheduleSettings] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryCount:
    """Outcomes of one worker type in one minute: ``minute`` is the epoch second
    it starts at (a multiple of 60); ``run_time`` sums the attempts' seconds."""

    worker: str
    minute: int
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    run_time: float = 0.0


def node_problem(node: NodeInfo) -> str | None:
    """Why a store must refuse ``node`` (None: it is valid). Backends share this check."""
    if not isinstance(node.name, str) or not node.name:
        return "a node name must be a non-empty string"
    if len(node.name.encode("utf-8", "surrogatepass")) > NODE_NAME_LIMIT:
        return f"a node name takes at most {NODE_NAME_LIMIT} UTF-8 bytes"
    if not isinstance(node.host, str) or len(node.host.encode("utf-8", "surrogatepass")) > 255:
        return "a node's host must be a string of at most 255 UTF-8 bytes"
    if isinstance(node.pid, bool) or not isinstance(node.pid, int) or node.pid < 0:
        return "a node's pid must be a non-negative int"
    if isinstance(node.running, bool) or not isinstance(node.running, int) or node.running < 0:
        return "a node's running count must be a non-negative int"
    for worker, concurrency in node.workers.items():
        if not isinstance(worker, str) or not worker:
            return "a node's worker names must be non-empty strings"
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0:
            return f"worker {worker!r}: concurrency must be a non-negative int"
    for value in (node.started_at, node.seen_at):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return "a node's started_at and seen_at must be numbers"
    if not isinstance(node.types, Mapping):
        return "a node's types must map worker type names to TypeSettings"
    for worker, settings in node.types.items():
        if not isinstance(worker, str) or not worker:
            return "a node's worker type names (in types) must be non-empty strings"
        problem = settings_problem(settings)
        if problem is not None:
            return f"worker type {worker!r}: {problem}"
    if not isinstance(node.schedules, Mapping):
        return "a node's schedules must map schedule names to ScheduleSettings"
    for name, definition in node.schedules.items():
        if not isinstance(name, str) or not name or len(name.encode()) > SCHEDULE_NAME_LIMIT:
            return "a node's schedule names must be non-empty strings of at most 255 UTF-8 bytes"
        problem = schedule_settings_problem(definition)
        if problem is not None:
            return f"schedule {name!r}: {problem}"
    return None


def _is_int(value: object, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= least


def _is_seconds(value: object) -> bool:
    """A positive, finite number of seconds."""
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < float("inf")
    )


def settings_problem(settings: object) -> str | None:
    """Why ``settings`` cannot be stored as a :class:`TypeSettings` (None: valid)."""
    if not isinstance(settings, TypeSettings):
        return f"settings must be a TypeSettings, not {type(settings).__name__}"
    s = settings
    if not _is_int(s.concurrency, 0):
        return f"concurrency must be a non-negative int, not {s.concurrency!r}"
    if not _is_int(s.max_attempts, 1):
        return f"max_attempts must be a positive int, not {s.max_attempts!r}"
    for name in ("serial", "is_async", "partitioned"):
        if not isinstance(getattr(s, name), bool):
            return f"{name} must be a bool, not {getattr(s, name)!r}"
    for name in ("global_limit", "rate"):
        value = getattr(s, name)
        if value is not None and not _is_int(value, 1):
            return f"{name} must be None or a positive int, not {value!r}"
    if (s.rate is None) != (s.per is None):
        return "rate and per are given together (starts per seconds) or neither"
    for name in ("per", "timeout"):
        value = getattr(s, name)
        if value is not None and not _is_seconds(value):
            return f"{name} must be None or a positive finite number, not {value!r}"
    if not isinstance(s.backoff, str):
        return f"backoff must be a string, not {type(s.backoff).__name__}"
    if len(s.backoff.encode("utf-8", "surrogatepass")) > BACKOFF_TEXT_LIMIT:
        return f"backoff takes at most {BACKOFF_TEXT_LIMIT} UTF-8 bytes"
    return None


def history_problem(count: HistoryCount) -> str | None:
    """Why a store must refuse ``count`` (None: it is valid). Backends share this check."""
    if not isinstance(count.worker, str) or not count.worker:
        return "a history count needs a non-empty worker name"
    if isinstance(count.minute, bool) or not isinstance(count.minute, int) or count.minute % 60:
        return f"minute must be an int multiple of 60 (epoch seconds), not {count.minute!r}"
    for name in ("succeeded", "failed", "dead"):
        value = getattr(count, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name} must be a non-negative int, not {value!r}"
    run_time = count.run_time
    if isinstance(run_time, bool) or not isinstance(run_time, int | float) or not run_time >= 0:
        return f"run_time must be a non-negative number, not {run_time!r}"
    return None


@runtime_checkable
class SupportsNodes(Protocol):
    """Optional capability :data:`NODES`: the live worker processes, from the store.

    Nodes register and heartbeat with :meth:`beat_node`; the core decides when
    one is stale (its ``seen_at`` too old) and drops it with :meth:`drop_nodes`.
    An invalid node (:func:`node_problem`) raises ``ValueError`` and stores nothing.
    """

    def beat_node(self, node: NodeInfo) -> None:
        """Store ``node``, replacing every field of a stored node of the same name."""
        ...

    def nodes(self) -> list[NodeInfo]:
        """Every stored node, ordered by name."""
        ...

    def drop_nodes(self, *, before: float | None = None, name: str | None = None) -> list[str]:
        """Remove the nodes with ``seen_at < before``, and the node ``name``; the names removed.

        With neither argument nothing is removed."""
        ...


@runtime_checkable
class SupportsHistory(Protocol):
    """Optional capability :data:`HISTORY`: per worker type and minute, outcome counts.

    Counts only grow: :meth:`add_history` adds to what is stored, atomically,
    so nodes writing the same minute never lose one another's counts. An
    invalid count (:func:`history_problem`) raises ``ValueError`` and the
    whole batch stores nothing.
    """

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        """Add each count's numbers to its ``(worker, minute)`` row (made when missing), all
        or nothing."""
        ...

    def history(self, *, since: int, worker: str | None = None) -> list[HistoryCount]:
        """Rows with ``minute >= since`` (of ``worker`` if given), by ``(minute, worker)``."""
        ...

    def prune_history(self, before: int) -> int:
        """Remove the rows with ``minute < before``; how many were removed."""
        ...


# -- cancellation and snooze (issue 16) -----------------------------------------------

#: Implements :class:`SupportsCancel`: waiting jobs cancelled, running ones asked to stop.
CANCEL = "cancel"
#: Implements :class:`SupportsSnooze`: a held job put back for later, attempt not spent.
SNOOZE = "snooze"
#: The error text a cancelled job is kept (dead) with.
CANCELLED = "cancelled"

CancelResult = Literal["cancelled", "deleted", "requested", "missing", "finished"]
SnoozeResult = Literal["snoozed", "capped", "lost"]


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Cancel ``job_id``; ``delete``: remove a waiting job instead of keeping it dead."""

    job_id: str
    delete: bool = False


@dataclass(frozen=True, slots=True)
class SnoozeRequest:
    """Put ``job_id`` (held with ``token``) back to ``waiting`` at ``run_at``.

    ``max_snoozes``: how many snoozes the job may have had before this one is refused.
    """

    job_id: str
    token: str
    run_at: float
    max_snoozes: int


@runtime_checkable
class SupportsCancel(Protocol):
    """Optional capability :data:`CANCEL`.

    A waiting job is cancelled at once: it becomes ``dead`` with the error
    :data:`CANCELLED` (recorded as ``bury`` does, attempt left as it was) or,
    with ``delete``, is removed (as :meth:`Storage.delete`). A running job is
    only marked: it stays ``running`` under its lease, and its holder, which
    asks :meth:`cancel_requested` at each heartbeat, stops it and records the
    outcome with its token (fenced like every transition). A dead job is left
    as it was (``finished``; with ``delete`` it is removed, ``deleted``).
    A mark dies with the attempt: once the job leaves ``running`` (any
    transition, recovery included) it is no longer marked.
    """

    def cancel(self, request: CancelRequest) -> CancelResult:
        """``cancelled`` / ``deleted`` / ``requested`` (running) / ``finished`` / ``missing``."""
        ...

    def cancel_requested(self, token: str, job_ids: Sequence[str]) -> list[str]:
        """Of ``job_ids`` running with ``token``, those marked for cancellation."""
        ...


@runtime_checkable
class SupportsSnooze(Protocol):
    """Optional capability :data:`SNOOZE`: run a held job again later, attempt not spent.

    A stored per-job count of snoozes (``snoozes`` on :class:`JobRecord` where the
    backend reports it through :meth:`snoozes`) survives retries; ``requeue``
    makes a new job with none.
    """

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        """``running`` (held with ``token``) -> ``waiting`` at ``run_at``, ``attempt -= 1``,
        lease cleared, the job's snooze count + 1: ``snoozed``. ``capped`` (nothing
        changed) when the count is already ``max_snoozes``; ``lost`` when not held."""
        ...

    def snoozes(self, job_id: str) -> int:
        """How many times the job was snoozed (0 for a missing job)."""
        ...


#: Implements :class:`SupportsAsyncEnqueue`: enqueue through a native async driver.
ASYNC_ENQUEUE = "async_enqueue"


@runtime_checkable
class SupportsAsyncEnqueue(Protocol):
    """Optional capability :data:`ASYNC_ENQUEUE`: ``enqueue`` as a coroutine.

    The same transition as :meth:`Storage.enqueue` (same result, same errors),
    awaited on the caller's event loop through the backend's own async driver,
    so an async web handler enqueues without a thread hop.
    """

    async def aenqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """:meth:`Storage.enqueue`, awaitable."""
        ...
