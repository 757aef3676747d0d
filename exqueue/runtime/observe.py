"""This node's entry in the store's live nodes, and its outcome history, written in batches.

A :class:`Tally` counts each finished attempt in memory under the
``(worker type, minute)`` it finished in; a job thread pays a lock and a dict
update, nothing more. The :class:`Observer` thread writes the tally in one
``add_history`` call every ``FLUSH_EVERY`` seconds (and at stop), beats this
node's entry every third of a lease (``beat_node``), drops nodes not seen for
:func:`stale_after` and prunes history older than ``HISTORY_KEEP``. A failed
write keeps its counts for the next one; a store without the capability is
simply not told.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exqueue.runtime.config import Ledger, NodeConfig
from exqueue.storage import (
    HISTORY,
    NODES,
    HistoryCount,
    NodeInfo,
    ScheduleSettings,
    SupportsHistory,
    SupportsNodes,
    TypeSettings,
)
from exqueue.storage_optional import (
    BACKOFF_TEXT_LIMIT,
    schedule_settings_problem,
    settings_problem,
)

if TYPE_CHECKING:
    from exqueue.schedules import Schedule
    from exqueue.worker_type import WorkerType

log = logging.getLogger("exqueue")

#: Seconds between history writes (counts of a killed node in that window are lost).
FLUSH_EVERY = 5.0
#: How long history is kept (24 hours), pruned by the workers.
HISTORY_KEEP = 24 * 3600
#: Seconds between prunes of old history and stale nodes.
PRUNE_EVERY = 60.0

SUCCEEDED, FAILED, DEAD = 0, 1, 2


def stale_after(lease: float) -> float:
    """A node not seen for this long is gone: three missed heartbeats (one every lease/3)."""
    return lease


def minute_of(now: float) -> int:
    return int(now // 60) * 60


def backoff_text(backoff: object) -> str:
    """The backoff as published: its ``repr``, or its class's name where the repr is
    object's own (its address differs per process, so every node would seem to
    disagree) or fails; cut to :data:`BACKOFF_TEXT_LIMIT` bytes."""
    kind = type(backoff)
    text = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__repr__ is not object.__repr__:
        try:
            text = repr(backoff)
        except Exception:  # a user's Backoff whose repr fails: its class names it
            pass
    return text.encode("utf-8", "replace")[:BACKOFF_TEXT_LIMIT].decode("utf-8", "ignore")


def settings_of(worker: WorkerType[Any, Any]) -> TypeSettings:
    """What this node publishes of a worker type with its heartbeat (see ``NodeInfo.types``)."""
    limits = worker.limits
    rate = limits.rate if limits is not None else None
    return TypeSettings(
        concurrency=worker.concurrency,
        serial=worker.serial,
        is_async=worker.is_async,
        global_limit=limits.global_limit if limits is not None else None,
        rate=rate[0] if rate is not None else None,
        per=float(rate[1]) if rate is not None else None,
        partitioned=limits is not None and limits.partition is not None,
        timeout=worker.defaults.timeout if worker.defaults is not None else None,
        max_attempts=worker.max_attempts,
        backoff=backoff_text(worker.backoff),
    )


def definition_of(schedule: Schedule) -> ScheduleSettings:
    """What this node publishes of a schedule it fires (see ``NodeInfo.schedules``)."""
    return ScheduleSettings(
        worker=schedule.worker,
        cron=schedule.cron,
        every=schedule.every,
        zone=schedule.zone.key,
        missed=schedule.missed,
    )


class Tally:
    """Outcome counts not yet written (see the module docstring).

    Successes, the hot path, go to counters each job thread owns
    (:meth:`own`: worker type -> ``[count, seconds]``), written by that thread
    alone, without a lock; :meth:`take` reads them (a dict copy is atomic in
    CPython) and keeps what it has seen, so each success is taken once.
    They are put under the minute of the previous take, which the observer
    makes at every minute's start. Failures and deaths, rare, are added under
    a lock with their own minute.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, int], list[float]] = {}
        self.owned: list[dict[str, list[float]]] = []
        self.seen: list[dict[str, tuple[float, float]]] = []
        self.since = clock()  # when successes were last taken

    def own(self) -> dict[str, list[float]]:
        """A counter for the calling job thread alone: ``own[worker] = [count, seconds]``."""
        mine: dict[str, list[float]] = {}
        with self.lock:
            self.owned.append(mine)
            self.seen.append({})
        return mine

    def add(self, worker: str, outcome: int, duration: float) -> None:
        key = (worker, int(self.clock() // 60) * 60)
        with self.lock:
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = [0, 0, 0, 0.0]
            row[outcome] += 1
            row[3] += duration

    def take(self) -> list[HistoryCount]:
        now = self.clock()
        with self.lock:
            minute = minute_of(self.since)
            self.since = now
            for mine, seen in zip(self.owned, self.seen, strict=True):
                for worker, (count, seconds) in list(mine.items()):
                    before = seen.get(worker, (0, 0.0))
                    if count != before[0]:
                        row = self.rows.setdefault((worker, minute), [0, 0, 0, 0.0])
                        row[SUCCEEDED] += count - before[0]
                        row[3] += seconds - before[1]
                        seen[worker] = (count, seconds)
            rows, self.rows = self.rows, {}
        return [
            HistoryCount(worker, minute, int(s), int(f), int(d), float(t))
            for (worker, minute), (s, f, d, t) in rows.items()
        ]

    def put_back(self, counts: list[HistoryCount]) -> None:
        with self.lock:
            for count in counts:
                row = self.rows.setdefault((count.worker, count.minute), [0, 0, 0, 0.0])
                row[0] += count.succeeded
                row[1] += count.failed
                row[2] += count.dead
                row[3] += count.run_time


class Observer:
    """Beats this node, writes the tally, prunes (see the module docstring)."""

    def __init__(self, config: NodeConfig, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        storage = config.storage
        caps = storage.capabilities
        self.nodes = storage if NODES in caps and isinstance(storage, SupportsNodes) else None
        self.history = storage if HISTORY in caps and isinstance(storage, SupportsHistory) else None
        self.tally = Tally(config.clock) if self.history is not None else None
        self.started_at = config.clock()
        self.host = socket.gethostname()
        self.last_prune = float("-inf")
        # The settings do not change while the node runs: worked out once. One the
        # store would refuse is left out (and said), so the node is still listed.
        self.types = {}
        for name, worker in config.workers.items():
            settings = settings_of(worker)
            problem = settings_problem(settings)
            if problem is None:
                self.types[name] = settings
            else:
                log.warning("not publishing the settings of %s: %s", name, problem)
        # The schedules this node fires (none with --no-schedules: it does not fire them).
        self.schedules = {}
        scheduler = config.scheduler
        for name, schedule in (scheduler.schedules if scheduler is not None else {}).items():
            definition = definition_of(schedule)
            problem = schedule_settings_problem(definition)
            if problem is None:
                self.schedules[name] = definition
            else:
                log.warning("not publishing the definition of schedule %s: %s", name, problem)

    @property
    def active(self) -> bool:
        return self.nodes is not None or self.history is not None

    def info(self) -> NodeInfo:
        with self.ledger.lock:
            running = len(self.ledger.held)
        return NodeInfo(
            self.config.node,
            self.host,
            os.getpid(),
            self.started_at,
            self.config.clock(),
            {name: worker.concurrency for name, worker in self.config.workers.items()},
            running,
            self.types,
            self.schedules,
        )

    def loop(self) -> None:
        beat_every = self.config.lease / 3
        clock = self.config.clock
        next_beat = time.monotonic() + beat_every
        self.beat()
        while True:
            # Wake at the next minute's start too, so successes land in their minute.
            to_minute = 60 - clock() % 60
            step = min(FLUSH_EVERY, to_minute + 0.001, max(next_beat - time.monotonic(), 0.0))
            if self.ledger.stopping.wait(step):
                return
            self.flush()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                self.beat()

    def beat(self) -> None:
        now = self.config.clock()
        try:
            if self.nodes is not None:
                self.nodes.beat_node(self.info())
            if now - self.last_prune >= PRUNE_EVERY:
                self.last_prune = now
                if self.nodes is not None:
                    self.nodes.drop_nodes(before=now - stale_after(self.config.lease))
                if self.history is not None:
                    self.history.prune_history(minute_of(now - HISTORY_KEEP))
        except Exception as exc:
            log.warning("node heartbeat or history prune failed (%s); retrying later", exc)

    def flush(self) -> None:
        if self.tally is None or self.history is None:
            return
        counts = self.tally.take()
        if not counts:
            return
        try:
            self.history.add_history(counts)
        except Exception as exc:
            self.tally.put_back(counts)
            log.warning("writing outcome history failed (%s); kept for the next write", exc)

    def close(self) -> None:
        """At stop: the last counts, and this node leaves the live nodes."""
        self.flush()
        if self.nodes is not None:
            try:
                self.nodes.drop_nodes(name=self.config.node)
            except Exception as exc:
                log.warning("removing node %s from the store failed (%s)", self.config.node, exc)

    def dead_by_id(self, job_id: str) -> None:
        """Count a job that died off a job thread (lost worker, expiry): its type is read."""
        if self.tally is None:
            return
        try:
            record = self.config.storage.get(job_id)
        except Exception:
            return
        if record is not None:
            self.tally.add(record.worker, DEAD, 0.0)
