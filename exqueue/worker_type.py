"""A registered job function (``WorkerType``) and its options form (``WithOptions``).

``fn.enqueue(*args, **kwargs)`` passes every keyword to the job, so per-enqueue
options go through ``fn.options(...)``, which returns a :class:`WithOptions`
whose ``enqueue`` and ``call`` take only the job's arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, ParamSpec, TypeVar, Unpack

from exqueue.errors import InvalidScheduleError
from exqueue.guards import check_delay, is_async_function
from exqueue.job import Call, JobId
from exqueue.options import JobOptions, OptionArgs
from exqueue.policy import Backoff

if TYPE_CHECKING:
    from exqueue.limits import WorkerLimits
    from exqueue.queue import Queue

P = ParamSpec("P")
R = TypeVar("R")


class WorkerType(Generic[P, R]):
    """A registered job function. Call it to run it inline; ``.enqueue`` to queue it.

    ``defaults`` holds the worker type's default options (None: it has none).
    """

    def __init__(
        self,
        queue: Queue,
        fn: Callable[P, R],
        *,
        name: str,
        concurrency: int,
        max_retries: int,
        backoff: Backoff,
        serial: bool,
        defaults: JobOptions | None = None,
        limits: WorkerLimits | None = None,
        cpu_bound: bool = False,
    ) -> None:
        self.queue = queue
        self.fn = fn
        self.name = name
        self.concurrency = 1 if serial else concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.serial = serial
        self.defaults = defaults
        #: Cluster-wide limits (``global_limit``, ``rate_limit``, ``partition``); None: none.
        self.limits = limits
        #: Its body holds the GIL: ``exqueue worker`` runs a process per CPU (see cli).
        self.cpu_bound = bool(cpu_bound)
        #: An ``async def`` function: its jobs run as coroutines on the worker's event loop.
        self.is_async = is_async_function(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call:
        """A :class:`Call` for ``queue.enqueue_many``."""
        return Call(self.name, args, dict(kwargs))

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """Persist a job to run as soon as possible; returns its id.

        For a unique job whose key is already held, the holder's id, with
        ``.duplicate`` True (nothing was stored).
        """
        return self.queue._enqueue_one(self.name, args, kwargs, None, 0.0)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """:meth:`enqueue` without blocking the event loop (for async web handlers)."""
        call = self.call(*args, **kwargs)
        return (await self.queue.aenqueue_many([call]))[0]

    async def aenqueue_in(self, seconds: float, /, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """:meth:`enqueue_in` without blocking the event loop."""
        call = Call(self.name, args, dict(kwargs), delay=check_delay(seconds))
        return (await self.queue.aenqueue_many([call]))[0]

    def enqueue_in(self, seconds: float, /, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """Persist a job to run ``seconds`` from now."""
        return self.queue._enqueue_one(self.name, args, kwargs, None, check_delay(seconds))

    def enqueue_at(self, when: dt.datetime, /, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """Persist a job to run at ``when`` (a naive datetime is local time)."""
        if not isinstance(when, dt.datetime):
            raise TypeError(f"enqueue_at needs a datetime, not {when!r}")
        try:
            run_at = when.timestamp()
        except (OverflowError, ValueError, OSError) as exc:  # datetime.max in local time
            raise InvalidScheduleError(f"enqueue_at({when!r}) is out of range: {exc}") from None
        return self.queue._enqueue_one(self.name, args, kwargs, run_at, 0.0)

    def options(self, **options: Unpack[OptionArgs]) -> WithOptions[P, R]:
        """This worker type with options for the jobs enqueued through the result.

        ``fn.options(priority=1, unique=True).enqueue(*args, **kwargs)``; see
        :class:`exqueue.JobOptions` for each option (the keywords of
        :class:`exqueue.options.OptionArgs`). Options left out take the
        worker type's defaults; ``meta`` is merged over the worker type's.
        """
        return WithOptions(self, JobOptions(**options))

    def __repr__(self) -> str:
        limits = f" {self.limits.describe()}" if self.limits is not None else ""
        return f"<exqueue worker {self.name!r} concurrency={self.concurrency}{limits}>"


class WithOptions(Generic[P, R]):
    """A worker type with options for one enqueue (``fn.options(...)``)."""

    def __init__(self, worker: WorkerType[P, R], options: JobOptions) -> None:
        self.worker = worker
        self.job_options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """Persist a job with these options; returns its id (or a unique holder's)."""
        worker = self.worker
        return worker.queue._enqueue_one(worker.name, args, kwargs, None, 0.0, self.job_options)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobId:
        """:meth:`enqueue` without blocking the event loop."""
        return (await self.worker.queue.aenqueue_many([self.call(*args, **kwargs)]))[0]

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call:
        """A :class:`Call` carrying these options, for ``queue.enqueue_many``."""
        return Call(self.worker.name, args, dict(kwargs), options=self.job_options)

    def options(self, **options: Unpack[OptionArgs]) -> WithOptions[P, R]:
        """These options with more on top (the new ones win; meta is merged)."""
        more = JobOptions(**options)
        return WithOptions(self.worker, self.job_options.merged(more))

    def __repr__(self) -> str:
        return f"<exqueue worker {self.worker.name!r} with {self.job_options!r}>"
