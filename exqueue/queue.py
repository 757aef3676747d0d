"""The public ``Queue``: registering worker types, enqueueing, and running the workers.

Inspecting and managing stored jobs (``jobs``, ``retry``, ``cancel``, ``stats``...)
is in :mod:`exqueue.queue_manage`; schedules, limits, node reads and the async
calls are in the other ``queue_*`` mixins, all base classes of :class:`Queue`.

Retry decisions and defaults live in :mod:`exqueue.policy`; the queue keeps a
worker type's settings, hears of each death (``on_dead``) and hands a
:class:`~exqueue.runtime.NodeConfig` to the runtime that runs its workers.
A registered function is a :class:`~exqueue.worker_type.WorkerType`; job
options (priority, unique, meta, timeout, expiry) are checked and merged by
:mod:`exqueue.options` before a job is stored.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from exqueue.codec import Codec, get_codec
from exqueue.errors import (
    ConfigurationError,
    UnknownWorkerError,
)
from exqueue.guards import (
    MAX_RETRIES,
    check_count,
    check_delay,
    check_run_at,
    check_seconds,
    check_worker_function,
    check_worker_name,
    worker_name_problem,
)
from exqueue.job import Call, DuplicateJobId, Job, JobId
from exqueue.limits import PartitionOption, worker_limits
from exqueue.limits import check_storage as check_limits_storage
from exqueue.middleware import DeadCallback, Hooks, Middleware
from exqueue.options import (
    JobOptions,
    Seconds,
    UniqueOption,
    check_default_capabilities,
    resolve,
    worker_defaults,
)
from exqueue.policy import (
    DEFAULT_LEASE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    Backoff,
    Fixed,
)
from exqueue.queue_async import AsyncMethods
from exqueue.queue_limits import LimitMethods, with_partition
from exqueue.queue_manage import ManageMethods, WorkerStats, new_job_id
from exqueue.queue_observe import ObserveMethods
from exqueue.queue_schedules import ScheduleMethods
from exqueue.registry import connect
from exqueue.storage import (
    TRANSACTIONAL_ENQUEUE,
    JobRecord,
    NewJob,
    Storage,
    SupportsTransactionalEnqueue,
)
from exqueue.worker_type import WithOptions, WorkerType

__all__ = ["DEFAULT_URL", "Queue", "WithOptions", "WorkerStats", "WorkerType", "new_job_id"]

if TYPE_CHECKING:
    from exqueue.runtime import NodeConfig, Runtime

log = logging.getLogger("exqueue")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "sqlite:///exqueue.db"
DeadReporter = Callable[[Job, BaseException | None], None]


def _default_node() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Queue(ManageMethods, LimitMethods, ScheduleMethods, ObserveMethods, AsyncMethods):
    """Jobs over one storage, and the worker types that run them.

    ``storage`` is a :class:`~exqueue.Storage` or a URL (default: the SQLite file
    ``./exqueue.db``). ``lease`` is how long a claim holds without a heartbeat;
    ``node`` names this process (a stable name reclaims its own jobs at start);
    ``clock`` returns epoch seconds and can be replaced in tests; ``codec`` is
    ``"json"`` (safe default) or ``"pickle"`` (trusted storage only).
    ``poll_interval`` is the longest an idle worker waits before looking for
    jobs on backends without a wake-up signal. ``prefetch`` (default 0: claim
    only what starts at once) lets a worker type claim up to that many jobs
    ahead of its running ones, for throughput with many short jobs; it buffers
    only about 0.1 s of work, judged by recent job durations, and serial types
    never prefetch. A buffered job's attempt counts from its claim: if the
    process dies, buffered jobs are recovered with that attempt spent.
    ``check_clock``: compare ``clock`` with the storage server's clock, where it
    has one, and stop claiming and recovering while they differ by more than a
    quarter of the lease (see docs/reliability.md). By default only the real
    clock (``time.time``) is checked: a clock a test moves by hand is not a wall
    clock; pass True to check an injected one too.

    ``timeout_grace``: seconds a plain (thread) job past its timeout gets, after
    :class:`exqueue.JobTimeout` is raised in its thread, before it is abandoned
    (see docs/async.md).
    """

    def __init__(
        self,
        storage: Storage | str | None = None,
        *,
        lease: float = DEFAULT_LEASE,
        node: str | None = None,
        clock: Callable[[], float] = time.time,
        codec: str | Codec = "json",
        poll_interval: float = 1.0,
        prefetch: int = 0,
        check_clock: bool | None = None,
        run_schedules: bool = True,
        middleware: Sequence[Middleware] = (),
        timeout_grace: float = 5.0,
        max_snoozes: int = 100,
    ) -> None:
        check_seconds("lease", lease, positive=True)
        check_seconds("poll_interval", poll_interval, positive=True)
        check_count("prefetch", prefetch, low=0)
        if storage is None or isinstance(storage, str):
            storage = connect(storage or DEFAULT_URL)
        self.storage: Storage = storage
        self.lease = lease
        self.node = node or _default_node()
        self.clock = clock
        self.check_clock = clock is time.time if check_clock is None else bool(check_clock)
        self.codec = get_codec(codec)
        self.poll_interval = poll_interval
        self.prefetch = prefetch
        self.workers: dict[str, WorkerType[Any, Any]] = {}
        self.hooks = Hooks(middleware)
        self._runtime: Runtime | None = None
        self.run_schedules = run_schedules
        self.timeout_grace = check_seconds("timeout_grace", timeout_grace)
        self.max_snoozes = check_count("max_snoozes", max_snoozes, low=0)
        #: Called with the number of job threads abandoned so far, after each one
        #: (``exqueue worker`` replaces its process once they pile up).
        self.on_abandoned: Callable[[int], None] | None = None
        self._schedules = {}
        self._scheduler = None

    # -- registering -----------------------------------------------------------------

    # The overloads keep the function's signature on the WorkerType, so mypy
    # checks ``fn.enqueue(...)``, ``fn.call(...)`` and ``fn(...)`` against it.
    @overload
    def worker(self, fn: Callable[P, R], /) -> WorkerType[P, R]: ...

    @overload
    def worker(
        self,
        fn: None = None,
        /,
        *,
        concurrency: int = ...,
        max_retries: int = ...,
        backoff: Backoff | None = ...,
        serial: bool = ...,
        name: str | None = ...,
        priority: int | None = ...,
        unique: UniqueOption = ...,
        meta: Mapping[str, str] | None = ...,
        timeout: Seconds | None = ...,
        expires_in: Seconds | None = ...,
        global_limit: int | None = ...,
        partition: PartitionOption = ...,
        rate_limit: str | None = ...,
        cpu_bound: bool = ...,
    ) -> Callable[[Callable[P, R]], WorkerType[P, R]]: ...

    def worker(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        concurrency: int = 5,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: Backoff | None = None,
        serial: bool = False,
        name: str | None = None,
        priority: int | None = None,
        unique: UniqueOption = None,
        meta: Mapping[str, str] | None = None,
        timeout: Seconds | None = None,
        expires_in: Seconds | None = None,
        global_limit: int | None = None,
        partition: PartitionOption = None,
        rate_limit: str | None = None,
        cpu_bound: bool = False,
    ) -> WorkerType[P, R] | Callable[[Callable[P, R]], WorkerType[P, R]]:
        """Register a job function; usable as ``@queue.worker`` or ``@queue.worker(...)``.

        ``priority``, ``unique``, ``meta``, ``timeout`` and ``expires_in`` are the
        worker type's default job options (see :class:`exqueue.JobOptions`); one
        enqueue changes them with ``fn.options(...)``.

        Cluster-wide limits (see docs/limits.md): ``global_limit`` bounds the
        type's running jobs across every node; ``rate_limit`` (``"100/m"``) its
        starts per period; ``partition`` (a parameter name, or a function of the
        job's arguments returning a str) applies them per key.

        ``cpu_bound=True`` says the job's body spends its time in Python code (it
        holds the GIL): ``exqueue worker`` without ``--processes`` then runs one
        worker process per usable CPU instead of one (see docs/performance.md).
        """
        check_count("concurrency", concurrency, low=1)
        check_count("max_retries", max_retries, low=0, high=MAX_RETRIES)
        if not isinstance(cpu_bound, bool):
            raise ConfigurationError(f"cpu_bound must be True or False, not {cpu_bound!r}")

        def register(func: Callable[P, R]) -> WorkerType[P, R]:
            check_worker_function(func)
            worker_name = check_worker_name(name or f"{func.__module__}.{func.__qualname__}")
            if worker_name in self.workers:
                raise ConfigurationError(f"a worker named {worker_name!r} is already registered")
            defaults = worker_defaults(
                func,
                worker_name,
                priority=priority,
                unique=unique,
                meta=meta,
                timeout=timeout,
                expires_in=expires_in,
            )
            if defaults is not None:
                check_default_capabilities(defaults, self.storage)
            limits = worker_limits(
                func,
                worker_name,
                global_limit=global_limit,
                partition=partition,
                rate_limit=rate_limit,
                serial=serial,
            )
            if limits is not None:
                check_limits_storage(self.storage, worker_name, limits)
            worker_type = WorkerType(
                self,
                func,
                name=worker_name,
                concurrency=concurrency,
                max_retries=max_retries,
                backoff=backoff or Fixed(DEFAULT_RETRY_DELAY),
                serial=serial,
                defaults=defaults,
                limits=limits,
                cpu_bound=cpu_bound,
            )
            self.workers[worker_name] = worker_type
            return worker_type

        return register(fn) if fn is not None else register

    def on_dead(self, callback: DeadReporter) -> DeadReporter:
        """Register an error reporter, called once when a job dies (and only then).

        The callback gets the dead :class:`Job` and the exception of its last
        attempt (None when the worker was lost or the payload was unreadable).
        """
        self.hooks.add(DeadCallback(callback, self._to_job))
        return callback

    def add_middleware(self, middleware: Middleware) -> Middleware:
        """Add a middleware after those already added (see :mod:`exqueue.middleware`)."""
        self.hooks.add(middleware)
        return middleware

    def _to_job(self, record: JobRecord) -> Job:
        return Job.from_record(record, self.codec)

    # -- enqueueing ------------------------------------------------------------------

    def enqueue(self, worker: str, /, *args: Any, **kwargs: Any) -> JobId:
        """Enqueue by worker name (must be registered on this queue); returns the id."""
        return self._enqueue_one(worker, args, kwargs, None, 0.0)

    def _enqueue_one(
        self,
        worker: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_at: float | None,
        delay: float,
        options: JobOptions | None = None,
    ) -> JobId:
        # enqueue_many for one job, without building a Call and lists around it:
        # a single enqueue is the producers' hot path.
        job = self._new_job(worker, args, kwargs, run_at, delay, self.clock(), False, options)
        held = self._persist((job,), None)
        if held is None or held[0] == job.id:  # None: a version-1 backend stored it
            return JobId(job.id)
        return DuplicateJobId(held[0])

    def _new_job(
        self,
        worker: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_at: float | None,
        delay: float,
        now: float,
        allow_unknown: bool,
        options: JobOptions | None = None,
    ) -> NewJob:
        worker_type = self.workers.get(worker)
        if worker_type is None:
            # A registered name was checked at registration; any other is checked
            # here, before a database gives a raw error for it.
            problem = worker_name_problem(worker)
            if problem is not None:
                raise ValueError(f"{problem}; nothing was stored")
            if not allow_unknown:
                raise UnknownWorkerError(self._unknown_message(worker))
        defaults = worker_type.defaults if worker_type is not None else None
        if worker_type is not None and worker_type.limits is not None:
            if worker_type.limits.partition is not None:
                args = args if type(args) is tuple else tuple(args)
                kwargs = kwargs if type(kwargs) is dict else dict(kwargs)
                job = self._new_job_with_options(
                    worker_type,
                    worker_type.name,
                    args,
                    kwargs,
                    run_at,
                    delay,
                    now,
                    options or JobOptions(),
                    defaults,
                )
                return with_partition(worker_type, job, args, kwargs)
        if options is not None or defaults is not None:
            return self._new_job_with_options(
                worker_type, worker, args, kwargs, run_at, delay, now, options, defaults
            )
        return NewJob(
            new_job_id(),
            worker,
            # The codec only reads them: a copy is made only to turn another
            # sequence or mapping into the types it takes.
            self.codec.encode(
                args if type(args) is tuple else tuple(args),
                kwargs if type(kwargs) is dict else dict(kwargs),
            ),
            # Checked here so every path (enqueue_at, Call.run_at, Call.delay) is
            # covered; the common delay of 0 costs one comparison.
            check_run_at(run_at, now)
            if run_at is not None
            else now + (0.0 if delay == 0 else max(check_delay(delay), 0.0)),
            now,
            worker_type.max_attempts if worker_type else DEFAULT_MAX_RETRIES + 1,
        )

    def _new_job_with_options(
        self,
        worker_type: WorkerType[Any, Any] | None,
        worker: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_at: float | None,
        delay: float,
        now: float,
        options: JobOptions | None,
        defaults: JobOptions | None,
    ) -> NewJob:
        chosen = defaults.merged(options) if defaults is not None else options
        assert chosen is not None
        args = args if type(args) is tuple else tuple(args)
        kwargs = kwargs if type(kwargs) is dict else dict(kwargs)
        decided = resolve(
            chosen,
            fn=worker_type.fn if worker_type is not None else None,
            worker=worker,
            args=args,
            kwargs=kwargs,
            run_at=run_at,
            delay=delay,
            now=now,
            storage=self.storage,
        )
        return NewJob(
            new_job_id(),
            worker,
            self.codec.encode(args, kwargs),
            decided.run_at,
            now,
            worker_type.max_attempts if worker_type else DEFAULT_MAX_RETRIES + 1,
            priority=decided.priority,
            meta=decided.meta,
            timeout=decided.timeout,
            expires_at=decided.expires_at,
            unique=decided.unique,
        )

    def enqueue_many(
        self,
        calls: Iterable[Call],
        *,
        transaction: object | None = None,
        allow_unknown: bool = False,
    ) -> list[JobId]:
        """Persist several jobs at once, all or nothing; returns their ids in order.

        A unique job whose key is held (by a stored job or an earlier one of the
        batch) stores nothing and gives the holder's id (``.duplicate`` True);
        the rest are stored. ``allow_unknown=True`` lets a producer enqueue for
        workers registered only in other processes (they get the default of 5
        retries). ``transaction``
        enqueues through the caller's open database transaction, on backends that
        support it, so the jobs commit or roll back with the caller's data.
        """
        new_jobs = self._new_jobs(calls, allow_unknown)
        return self._job_ids(new_jobs, self._persist(new_jobs, transaction))

    def _new_jobs(self, calls: Iterable[Call], allow_unknown: bool) -> list[NewJob]:
        now = self.clock()
        return [
            self._new_job(
                c.worker, c.args, c.kwargs, c.run_at, c.delay, now, allow_unknown, c.options
            )
            for c in calls
        ]

    def _job_ids(self, new_jobs: Sequence[NewJob], held: list[str] | None) -> list[JobId]:
        """The ids an enqueue returns, from the holders the backend named."""
        ids = [job.id for job in new_jobs]
        # None: a version-1 backend, every job was stored. Equal lists: no duplicate.
        if held is None or held == ids:
            return list(map(JobId, ids))
        if len(held) != len(new_jobs):
            raise RuntimeError(
                f"{type(self.storage).__name__}.enqueue returned {len(held)} ids for "
                f"{len(new_jobs)} jobs (the protocol asks for one per job)"
            )
        return [
            JobId(holder) if holder == own else DuplicateJobId(holder)
            for own, holder in zip(ids, held, strict=True)
        ]

    def _persist(self, new_jobs: Sequence[NewJob], transaction: object | None) -> list[str] | None:
        """Store new jobs (through the caller's transaction if given); wake this node.

        Returns each job's holder id, or None from a backend that does not say
        (a version-1 backend, a transactional enqueue that does not: all stored).
        """
        hooks = self.hooks
        hooked = bool(hooks.chain)  # read once: Hooks.__bool__ is a call per use
        if hooked:
            new_jobs = [hooks.enqueue(job) for job in new_jobs]
        if transaction is not None:
            if TRANSACTIONAL_ENQUEUE not in self.storage.capabilities or not isinstance(
                self.storage, SupportsTransactionalEnqueue
            ):
                raise ConfigurationError(
                    f"{type(self.storage).__name__} does not support transactional enqueue"
                )
            held: list[str] | None = self.storage.enqueue_in(transaction, new_jobs)
        else:
            held = self.storage.enqueue(new_jobs)
        runtime = self._runtime
        if runtime is not None:
            runtime.wake()
        if hooked:
            for index, job in enumerate(new_jobs):
                hooks.enqueued(job, held[index] if held is not None else job.id)
        return held

    def _unknown_message(self, name: str) -> str:
        known = ", ".join(sorted(self.workers)) or "none"
        return (
            f"no worker named {name!r} is registered on this queue (registered: {known}); "
            "pass allow_unknown=True to enqueue_many to enqueue for a worker of another process"
        )

    # -- running ---------------------------------------------------------------------

    def _node_config(self) -> NodeConfig:
        from exqueue.runtime import NodeConfig

        return NodeConfig(
            storage=self.storage,
            workers=self.workers,
            codec=self.codec,
            node=self.node,
            lease=self.lease,
            poll_interval=self.poll_interval,
            prefetch=self.prefetch,
            clock=self.clock,
            report_dead=self._report_dead,
            hooks=self.hooks,
            check_clock=self.check_clock,
            scheduler=self._get_scheduler() if self.run_schedules else None,
            timeout_grace=self.timeout_grace,
            max_snoozes=self.max_snoozes,
        )

    def _make_runtime(self) -> Runtime:
        from exqueue.runtime import Runtime

        runtime = Runtime(self._node_config())
        runtime.on_abandoned = self.on_abandoned
        return runtime

    def start(self) -> None:
        """Recover, then run the workers in background threads until :meth:`stop`."""
        self._start()

    def _start(self) -> Runtime:
        if self._runtime is not None:
            raise RuntimeError("this queue is already running")
        runtime = self._make_runtime()
        self._runtime = runtime
        runtime.start()
        return runtime

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, wait up to ``timeout`` seconds for running jobs, release the rest."""
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.stop(timeout)

    def run(self, stop_timeout: float = 30.0) -> None:
        """Block running the workers; SIGINT or SIGTERM stops them gracefully.

        A second signal (a second or more after the first) stops at once: running
        jobs are released, their attempt not counted, and run again elsewhere.
        """
        from exqueue.runtime import run_until_signal

        run_until_signal(self._start, self.stop, stop_timeout)

    def drain(self, timeout: float | None = None) -> int:
        """Run jobs until nothing is runnable and nothing is running; returns how many ran.

        Jobs scheduled for later (including retries waiting out their backoff) are
        left waiting. ``timeout`` bounds the whole call in real seconds.
        """
        if self._runtime is not None:
            raise RuntimeError("drain() cannot run while the queue is started")
        runtime = self._make_runtime()
        self._runtime = runtime
        try:
            return runtime.drain(timeout)
        finally:
            self._runtime = None

    def close(self) -> None:
        """Stop the workers (if started) and close the storage."""
        self.stop()
        self.storage.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report_dead(self, job_id: str, exc: BaseException | None) -> None:
        if not self.hooks:
            return
        record = self.storage.get(job_id)
        if record is None:
            return
        self.hooks.dead(record, exc)
