"""The storage protocol: the small set of atomic transitions every backend applies.

A backend stores job records and applies the transitions below atomically and
durably. The core decides when a job retries, with which delay, and when it
dies; the backend checks the preconditions each transition names (state,
fencing token, ``run_at <= now``) and applies it. One rule is the backend's to
apply, because it must hold inside the same atomic step: :meth:`Storage.recover`
sends a job whose lease expired back to ``waiting`` while ``attempt <
max_attempts`` and to ``dead`` otherwise.

Protocol version 2 (:data:`PROTOCOL_VERSION`) adds, on :class:`NewJob` and
:class:`JobRecord`, ``priority``, ``meta``, ``timeout``, ``expires_at`` and a
``unique`` claim (:class:`Unique`), each behind a capability so a backend that
cannot honour one says so and the core refuses the option with a clear error.
Fields are added to the parameter objects, never to argument lists, so a field
added later breaks no backend.

Every time-dependent call takes ``now`` (seconds since the epoch, a float) so a
test can drive time without sleeping. Backends never read a clock themselves.

Ordering: each job gets a sequence number (``seq``) from the backend at enqueue,
strictly increasing in enqueue order (within a batch, in list order). Claims
take runnable jobs ordered by ``(priority, run_at, seq)``: a lower priority
number runs first, and among equal priorities the earliest ``run_at``, then the
earliest enqueued. A serial worker type only ever runs its *head*: the job of
that worker with the lowest ``seq`` in any state, whatever its priority.
A manual retry of a dead job keeps its ``seq``, so a serial job keeps its place.

Uniqueness (capability :data:`UNIQUE`): a job enqueued with ``unique=Unique(key,
states, period)`` is a *duplicate* when a stored job of the same worker has the
same ``unique_key`` and a state in ``states`` (``waiting`` always counts; a
scheduled job is waiting), or when its ``period`` is set and a job of the same
worker with that key completed (``complete(now=T)``) with ``T + P > enqueued_at``,
``P`` being the period the *completed* job was enqueued with (with equal periods:
``T > enqueued_at - period``; a completion marker may be dropped once ``T + P``
has passed).
A duplicate stores nothing; :meth:`Storage.enqueue` returns the id of the job
that holds the key instead. The check and the insert are one atomic step, so
racing enqueuers (threads, processes, nodes) leave exactly one job. Within one
batch a later job duplicates an earlier one with the same worker and key. Keys of
different worker types never collide.

Expiry (capability :data:`EXPIRY`): a waiting job with ``expires_at <= now`` is
never claimed; :meth:`Storage.expire` moves such jobs to ``dead`` with the
error :data:`EXPIRED`, and the core reports them as dead.

Fencing: ``claim`` is given a fresh ``token`` by the core and stores it with
each claimed job. ``complete``, ``retry``, ``bury``, ``release`` and ``extend``
apply only while the job is ``running`` with that same token; otherwise they
change nothing and report so. Recovery clears the token, so a holder whose lease
was lost can never touch the job again, even if it is claimed anew.

Limits and pause (capabilities :data:`LIMITS` and :data:`PAUSE`): see
:mod:`exqueue.storage_limits`, whose names this module re-exports. A job carries
its ``partition`` (the limit key) and may be enqueued already ``dead`` with a
``dead_error``.

Error history is bounded: every failure (``schedule_retry``, ``bury``,
``recover``) records one error, but a job keeps only its first error and the
last :data:`ERRORS_KEPT` (``errors``, oldest first, at most ``ERRORS_KEPT + 1``
texts) plus ``error_count``, the number of errors ever recorded for it. The
trim happens inside the same atomic step as the failure, so the cost of a
failure does not grow with the number of earlier ones, and a job that fails
forever does not grow its record. One error text is stored as at most
:data:`ERROR_TEXT_LIMIT` UTF-8 bytes: a longer one keeps its head and its tail
around a marker saying how much was cut (:func:`clip_error`). ``requeue``
clears both the errors and the count. A record written before the bound (more
than ``ERRORS_KEPT + 1`` errors) is read as its first and last ``ERRORS_KEPT``
with the full count, and trimmed on its next write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

# Limits and pause (issue 15) live in their own module; re-exported here so the
# protocol stays one import for a backend author.
from exqueue.storage_limits import LIMITS as LIMITS
from exqueue.storage_limits import PARTITION_KEY_LIMIT as PARTITION_KEY_LIMIT
from exqueue.storage_limits import PAUSE as PAUSE
from exqueue.storage_limits import LimitedClaim as LimitedClaim
from exqueue.storage_limits import Limits as Limits
from exqueue.storage_limits import SupportsLimits as SupportsLimits
from exqueue.storage_limits import SupportsPause as SupportsPause
from exqueue.storage_scan import JOB_SCAN as JOB_SCAN
from exqueue.storage_scan import JobScan as JobScan
from exqueue.storage_scan import ScannedJobs as ScannedJobs
from exqueue.storage_scan import SupportsJobScan as SupportsJobScan

WAITING: Final = "waiting"
RUNNING: Final = "running"
DEAD: Final = "dead"
JobState = Literal["waiting", "running", "dead"]
STATES: tuple[JobState, ...] = (WAITING, RUNNING, DEAD)

#: A job keeps its first error and this many of the latest (see the module docstring).
ERRORS_KEPT: Final = 20
#: The most UTF-8 bytes one stored error text takes (see :func:`clip_error`).
ERROR_TEXT_LIMIT: Final = 64 * 1024

#: The error text recorded when a lease expires and the job is recovered.
WORKER_LOST = "worker lost: lease expired before the job finished"
#: The error text recorded when a job was not started before its ``expires_at``.
EXPIRED = "expired: not started before its expires_at"

#: The storage protocol version this module describes (see the module docstring).
PROTOCOL_VERSION: Final = 2
#: Priorities are 32-bit signed integers (lower runs first).
PRIORITY_MIN: Final = -(2**31)
PRIORITY_MAX: Final = 2**31 - 1
#: The most UTF-8 bytes of a unique key.
UNIQUE_KEY_LIMIT: Final = 255
#: The most entries, and the most UTF-8 bytes of all keys and values, in ``meta``.
META_ENTRIES_LIMIT: Final = 64
META_BYTES_LIMIT: Final = 8 * 1024

# Capability names a backend may declare in ``Storage.capabilities``.
#: Data survives ``close()`` and a new storage object over the same location.
PERSISTENT = "persistent"
#: Implements :class:`SupportsWakeup`: idle workers block instead of polling.
WAKEUP = "wakeup"
#: Implements :class:`SupportsTransactionalEnqueue`: enqueue inside the caller's transaction.
TRANSACTIONAL_ENQUEUE = "transactional_enqueue"
#: Several OS processes may share one store (claims are exclusive across processes).
MULTI_PROCESS = "multi_process"
#: Implements :class:`SupportsCompleteMany`: many successes recorded in one step.
COMPLETE_MANY = "complete_many"
#: Implements :class:`SupportsServerClock`: the store has a clock of its own (a
#: server's), which each node compares its ``now`` with to find clock skew.
SERVER_CLOCK = "server_clock"
#: Claims honour ``priority`` (protocol 2).
PRIORITY = "priority"
#: Stores and returns ``meta`` and ``timeout`` with each job, and filters
#: ``list_jobs`` by a meta entry (protocol 2).
METADATA = "metadata"
#: Honours :class:`Unique` at enqueue, returning the holder's id (protocol 2).
UNIQUE = "unique"
#: Never claims a job past ``expires_at`` and implements :meth:`Storage.expire` (protocol 2).
EXPIRY = "expiry"
#: Every protocol-2 capability: what a complete version-2 backend declares.
PROTOCOL_2 = frozenset({PRIORITY, METADATA, UNIQUE, EXPIRY})

#: The states a unique key covers when the caller does not say.
UNIQUE_STATES_DEFAULT: frozenset[JobState] = frozenset({WAITING, RUNNING})


@dataclass(frozen=True, slots=True)
class Unique:
    """How a job is unique: its ``key`` within its worker type, the states that
    hold the key (``waiting`` always does), and an optional ``period`` in seconds
    during which a completed job still holds it."""

    key: str
    states: frozenset[JobState] = UNIQUE_STATES_DEFAULT
    period: float | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to persist: everything the core decided before enqueue."""

    id: str
    worker: str
    payload: bytes
    run_at: float
    enqueued_at: float
    max_attempts: int
    # -- protocol 2 (each behind its capability; the defaults are version 1's behaviour)
    priority: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)
    #: Seconds one attempt may run (the runtime enforces it); None: no limit.
    timeout: float | None = None
    expires_at: float | None = None
    unique: Unique | None = None
    # -- limits (capability LIMITS, see exqueue.storage_limits)
    #: The job's limit key, computed by the core from the worker type's ``partition=``
    #: (at most :data:`PARTITION_KEY_LIMIT` UTF-8 bytes); None when not partitioned.
    partition: str | None = None
    #: When set, the job is stored directly as ``dead`` with this one error recorded
    #: (attempt 0) and is never claimable (a partition function that failed at enqueue);
    #: a unique key is not held by such a job.
    dead_error: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored.

    ``errors`` is oldest first: the first error and the last :data:`ERRORS_KEPT`.
    ``error_count`` is how many errors were ever recorded; it is never below
    ``len(errors)`` (a smaller value given, such as the default, is raised to it).
    """

    id: str
    seq: int
    worker: str
    payload: bytes
    state: JobState
    attempt: int
    max_attempts: int
    run_at: float
    enqueued_at: float
    errors: tuple[str, ...] = ()
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires: float | None = None
    #: When the running attempt was claimed (``now`` of the claim), on backends
    #: that record it; None otherwise and when not running. Informational only
    #: (``exqueue jobs --state running``), so it takes no part in comparisons.
    started_at: float | None = field(default=None, compare=False)
    error_count: int = 0
    # -- protocol 2
    priority: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    expires_at: float | None = None
    unique_key: str | None = None
    # -- limits
    partition: str | None = None

    def __post_init__(self) -> None:
        if self.error_count < len(self.errors):
            object.__setattr__(self, "error_count", len(self.errors))


def kept_errors(errors: Sequence[str]) -> tuple[str, ...]:
    """``errors`` (oldest first) as a job keeps them: the first and the last ``ERRORS_KEPT``."""
    if len(errors) <= ERRORS_KEPT + 1:
        return tuple(errors)
    return (errors[0], *errors[len(errors) - ERRORS_KEPT :])


def add_error(job: JobRecord, error: str) -> tuple[tuple[str, ...], int]:
    """The ``(errors, error_count)`` a job has after ``error`` is recorded on it."""
    return kept_errors((*job.errors, clip_error(error))), job.error_count + 1


def clip_error(text: str) -> str:
    """``text`` cut to at most ``ERROR_TEXT_LIMIT`` UTF-8 bytes: head, a marker, tail.

    Both ends are kept because a traceback names the failing call at its end.
    """
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= ERROR_TEXT_LIMIT:
        return text
    room = (ERROR_TEXT_LIMIT - 100) // 2  # the marker takes under 100 bytes
    head = raw[:room].decode("utf-8", "ignore")
    tail = raw[len(raw) - room :].decode("utf-8", "ignore")
    cut = len(raw) - len(head.encode()) - len(tail.encode())
    marker = f"\n[... {cut} bytes cut by exqueue ...]\n"
    return head + marker + tail


@dataclass(frozen=True, slots=True)
class Counts:
    """Per worker type: runnable now, scheduled for later, running, dead."""

    waiting: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class Recovered:
    """The outcome of :meth:`Storage.recover`: ids sent back to waiting, and ids that died."""

    waiting: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()


DeleteResult = Literal["deleted", "missing", "running"]
RequeueResult = Literal["requeued", "missing", "not_dead"]


@runtime_checkable
class Storage(Protocol):
    """Every operation a backend implements. Each call is one atomic transition."""

    #: Capability names this backend supports (see the module constants).
    capabilities: frozenset[str]

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Persist all ``jobs`` as ``waiting`` with ``attempt = 0``, all or nothing.

        Returns, for each job in order, the id of the job that holds it: its own
        id when stored, the holder's id when it is a unique duplicate (see the
        module docstring); duplicates store nothing and the rest are stored.
        A duplicate id raises ``ValueError`` and persists none of the batch.
        """
        ...

    def claim(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool = False,
    ) -> list[JobRecord]:
        """Move up to ``limit`` runnable ``waiting`` jobs of ``worker`` to ``running``.

        Runnable means ``run_at <= now`` and not expired (``expires_at`` unset or
        ``> now``); jobs are taken in ``(priority, run_at, seq)`` order.
        Each claimed job gets ``attempt += 1`` and the lease ``(owner, token,
        lease_until)``. With ``serial=True`` at most the worker's head (lowest
        ``seq`` in any state) is claimed, and only when it is runnable and waiting.
        Returns the claimed records as they are after the claim, in claim order.
        """
        ...

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        """Remove a ``running`` job held with ``token``. False when not held.

        ``now`` is when it completed: a job enqueued with a unique ``period``
        keeps holding its key until ``now + period`` (the core passes it to every
        backend that declares :data:`UNIQUE`; without it no period is kept).
        """
        ...

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        """``running`` (held with ``token``) -> ``waiting`` at ``run_at``; record ``error``.

        Recording an error appends it (clipped), trims ``errors`` to the first and
        the last ``ERRORS_KEPT`` and adds one to ``error_count``, in this same step.
        """
        ...

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        """``running`` (held with ``token``) -> ``dead``; record ``error`` (see schedule_retry)."""
        ...

    def release(self, job_id: str, token: str) -> bool:
        """``running`` (held with ``token``) -> ``waiting``; the attempt is not counted.

        ``attempt -= 1``; ``run_at`` is left as it was, so the job is runnable again.
        """
        ...

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        """Set ``lease_expires = lease_until`` on those jobs still ``running`` with ``token``.

        Returns the ids whose lease was extended; the others were lost.
        """
        ...

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        """Take back running jobs whose lease expired (``lease_expires <= now``).

        With ``owner``, also every running job leased by that owner, expired or not
        (a node restarted under a stable name reclaims its own jobs at once).
        A recovered job with ``attempt < max_attempts`` becomes ``waiting`` with
        ``run_at = now``; otherwise it becomes ``dead``. Either way ``error`` is
        recorded (as ``schedule_retry``) and the lease is cleared.
        """
        ...

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        """Move up to ``limit`` waiting jobs with ``expires_at <= now`` to ``dead``.

        Each records the error :data:`EXPIRED` (as ``bury``; ``attempt`` is left
        as it was). Returns their ids, oldest ``seq`` first. Capability :data:`EXPIRY`.
        """
        ...

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None."""
        ...

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        """Jobs filtered by state and worker, ordered by ``seq``, ``seq > after_seq``.

        ``tag=(key, value)`` keeps jobs whose ``meta[key] == value`` (capability
        :data:`METADATA`).
        """
        ...

    def delete(self, job_id: str) -> DeleteResult:
        """Remove a ``waiting`` or ``dead`` job. A running job is refused, not removed."""
        ...

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        """``dead`` -> ``waiting`` under ``new_id``: attempt 0, errors and
        ``error_count`` cleared, ``run_at = now``, the same ``seq``.

        ``priority``, ``meta``, ``timeout`` and ``unique_key`` are kept;
        ``expires_at`` is cleared (a person chose to run it). A person's requeue
        is not checked against the unique key."""
        ...

    def counts(self, now: float) -> dict[str, Counts]:
        """Per worker name with any job: waiting (runnable), scheduled, running, dead."""
        ...

    def close(self) -> None:
        """Release connections and resources. Idempotent."""
        ...


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


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One worker process as it last told the store (``beat_node``).

    ``workers`` maps each worker type it runs to its concurrency; ``running``
    is how many jobs it held at ``seen_at`` (the ``now`` of its last beat).
    """

    name: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    workers: Mapping[str, int] = field(default_factory=dict)
    running: int = 0


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
