"""What a runtime is given by its queue: one typed object, nothing reached through.

The queue builds a :class:`NodeConfig` when it starts or drains; the runtime
reads its settings and calls ``report_dead`` when a job dies, and knows no
other member of the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exqueue.codec import Codec
from exqueue.middleware import Hooks
from exqueue.storage import Storage

if TYPE_CHECKING:
    from exqueue.queue import WorkerType
    from exqueue.runtime.scheduler import Scheduler

#: Called once when a job dies: its id and the exception of its last attempt
#: (None when its worker was lost).
ReportDead = Callable[[str, BaseException | None], None]


@dataclass(frozen=True)
class NodeConfig:
    """One node's settings and its worker types (see :class:`exqueue.Queue`)."""

    storage: Storage
    workers: Mapping[str, WorkerType[Any, Any]]
    codec: Codec
    node: str
    lease: float
    poll_interval: float
    prefetch: int
    clock: Callable[[], float]
    report_dead: ReportDead
    #: Compare ``clock`` with the storage server's (``SERVER_CLOCK``); see ``.leases``.
    check_clock: bool = False
    #: Fires the queue's schedules (None: none registered, or this node opted out).
    scheduler: Scheduler | None = None
    #: The queue's middlewares (see :mod:`exqueue.middleware`).
    hooks: Hooks = field(default_factory=Hooks)
    #: Seconds a thread job past its timeout gets to stop before it is abandoned.
    timeout_grace: float = 5.0
    #: How many times one job may snooze (``exqueue.Snooze``) before a snooze is a failure.
    max_snoozes: int = 100


@dataclass
class Ledger:
    """What the runtime's rooms share: the jobs this node holds, its progress, its events.

    ``held`` maps a job id to its claim token while this node holds the job
    (buffered, running, or its success queued); ``progress`` is bumped whenever
    an outcome is recorded, so a drain can tell whether anything moved. Both,
    and ``finished``, are read and written under ``lock``. ``wake`` asks the
    dispatcher (or a drain) to claim now; ``stopping`` is set once by ``stop``;
    ``skewed`` is set while this node's clock is too far from the storage's to
    claim or recover (see :mod:`.leases`).
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    held: dict[str, str] = field(default_factory=dict)
    finished: int = 0
    progress: int = 0
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    skewed: threading.Event = field(default_factory=threading.Event)
