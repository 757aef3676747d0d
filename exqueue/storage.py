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

Optional capabilities (wakeup, transactional enqueue, schedules, nodes,
history, cancel, snooze, async enqueue): see :mod:`exqueue.storage_optional`,
whose names this module re-exports.

Bounded listing (capability :data:`JOB_SCAN`, ``scan_jobs``): see
:mod:`exqueue.storage_scan`, whose names this module re-exports.

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

from exqueue._frozen import cheap_init

# Limits and pause (issue 15) and the optional capabilities' protocols live in
# their own modules; re-exported here so the protocol stays one import for a
# backend author.
from exqueue.storage_limits import LIMITS as LIMITS
from exqueue.storage_limits import PARTITION_KEY_LIMIT as PARTITION_KEY_LIMIT
from exqueue.storage_limits import PAUSE as PAUSE
from exqueue.storage_limits import LimitedClaim as LimitedClaim
from exqueue.storage_limits import Limits as Limits
from exqueue.storage_limits import SupportsLimits as SupportsLimits
from exqueue.storage_limits import SupportsPause as SupportsPause
from exqueue.storage_next import FINISH_AND_CLAIM as FINISH_AND_CLAIM
from exqueue.storage_next import FINISH_IN_PARALLEL as FINISH_IN_PARALLEL
from exqueue.storage_next import FinishAndClaim as FinishAndClaim
from exqueue.storage_next import Finished as Finished
from exqueue.storage_next import SupportsFinishAndClaim as SupportsFinishAndClaim
from exqueue.storage_next import claim_requested as claim_requested
from exqueue.storage_optional import ASYNC_ENQUEUE as ASYNC_ENQUEUE
from exqueue.storage_optional import CANCEL as CANCEL
from exqueue.storage_optional import CANCELLED as CANCELLED
from exqueue.storage_optional import HISTORY as HISTORY
from exqueue.storage_optional import NODE_NAME_LIMIT as NODE_NAME_LIMIT
from exqueue.storage_optional import NODES as NODES
from exqueue.storage_optional import SCHEDULE_NAME_LIMIT as SCHEDULE_NAME_LIMIT
from exqueue.storage_optional import SCHEDULES as SCHEDULES
from exqueue.storage_optional import SNOOZE as SNOOZE
from exqueue.storage_optional import CancelRequest as CancelRequest
from exqueue.storage_optional import CancelResult as CancelResult
from exqueue.storage_optional import HistoryCount as HistoryCount
from exqueue.storage_optional import NodeInfo as NodeInfo
from exqueue.storage_optional import ScheduleSettings as ScheduleSettings
from exqueue.storage_optional import ScheduleState as ScheduleState
from exqueue.storage_optional import SnoozeRequest as SnoozeRequest
from exqueue.storage_optional import SnoozeResult as SnoozeResult
from exqueue.storage_optional import SupportsAsyncEnqueue as SupportsAsyncEnqueue
from exqueue.storage_optional import SupportsCancel as SupportsCancel
from exqueue.storage_optional import SupportsCompleteMany as SupportsCompleteMany
from exqueue.storage_optional import SupportsHistory as SupportsHistory
from exqueue.storage_optional import SupportsNodes as SupportsNodes
from exqueue.storage_optional import SupportsSchedules as SupportsSchedules
from exqueue.storage_optional import SupportsServerClock as SupportsServerClock
from exqueue.storage_optional import SupportsSnooze as SupportsSnooze
from exqueue.storage_optional import SupportsTransactionalEnqueue as SupportsTransactionalEnqueue
from exqueue.storage_optional import SupportsWakeup as SupportsWakeup
from exqueue.storage_optional import TypeSettings as TypeSettings
from exqueue.storage_optional import history_problem as history_problem
from exqueue.storage_optional import node_problem as node_problem
from exqueue.storage_optional import schedule_settings_problem as schedule_settings_problem
from exqueue.storage_optional import schedules_as_json as schedules_as_json
from exqueue.storage_optional import schedules_from_json as schedules_from_json
from exqueue.storage_optional import settings_problem as settings_problem
from exqueue.storage_optional import types_as_json as types_as_json
from exqueue.storage_optional import types_from_json as types_from_json
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


@cheap_init
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


@cheap_init
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
