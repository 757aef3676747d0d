"""What the dashboard shows, read through the public :class:`exqueue.Queue` API.

Counts over a big store are a scan on SQL backends (``counts()`` groups every
row), so :class:`Reader` keeps them for ``counts_ttl`` seconds (or five times as
long as the last read took, if longer) and refreshes them in the background once
stale. The app reads them once while starting (its lifespan) and an action reads
fresh ones before it redirects, so a page waits on the scan only when the app
is mounted without its lifespan (the first page) or a background read is slow.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exqueue.codec import get_codec
from exqueue.job import Job
from exqueue.queue import Queue, WorkerStats
from exqueue.storage import DEAD, HISTORY, METADATA, NODES, SCHEDULES, JobRecord, JobState
from exqueue.storage_scan import JOB_SCAN, JobScan, SupportsJobScan

#: Jobs per page of the jobs list.
PAGE_SIZE = 50
#: A tag filter reads at most this many jobs per page (and per batch of a bulk action)
#: where the store can scan in bounds (capability job_scan): a tag that matches few of
#: many jobs gives a partial page and a "continue" link instead of a scan of them all.
SCAN_BUDGET = 10_000
#: A decoded argument's ``repr`` is cut past this many characters.
REPR_LIMIT = 10_000
#: Counts are kept at least this many times as long as reading them took, so an
#: open page (it polls) keeps a slow ``counts()`` busy at most 1/LOAD_FACTOR of the time.
LOAD_FACTOR = 5
#: The worker-type pause capability (issue 15; declared by stores that can pause).
PAUSE = "pause"


def utc_text(value: dt.datetime | float | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS UTC`` ("" for None; damaged values as given)."""
    if value is None:
        return ""
    if not isinstance(value, dt.datetime):
        try:
            value = dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (OverflowError, ValueError, OSError):
            return str(value)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clipped_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a decoded value whose repr fails: show why, not a 500
        text = f"<unprintable: {exc!r}>"
    if len(text) > REPR_LIMIT:
        return f"{text[:REPR_LIMIT]}… ({len(text) - REPR_LIMIT} more characters)"
    return text


@dataclass(frozen=True)
class Filter:
    """The jobs list's filter, from the query string (bad values are reported, not used)."""

    state: JobState | None = None
    worker: str | None = None
    tag: tuple[str, str] | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, params: Any) -> Filter:
        problems: list[str] = []
        state = params.get("state") or None
        if state is not None and state not in ("waiting", "running", "dead"):
            problems.append(f"unknown state {state!r}")
            state = None
        worker = params.get("worker") or None
        tag = None
        raw_tag = params.get("tag") or ""
        if raw_tag:
            key, sep, value = raw_tag.partition("=")
            if sep and key:
                tag = (key, value)
            else:
                problems.append(f"a tag looks like KEY=VALUE, not {raw_tag!r}")
        return cls(state, worker, tag, tuple(problems))

    def query(self, **extra: Any) -> dict[str, str]:
        """The filter (and ``extra``) as query parameters, empty values left out."""
        values = {
            "state": self.state or "",
            "worker": self.worker or "",
            "tag": f"{self.tag[0]}={self.tag[1]}" if self.tag else "",
            **{k: "" if v is None else str(v) for k, v in extra.items()},
        }
        return {k: v for k, v in values.items() if v}


@dataclass
class _Cached:
    value: dict[str, WorkerStats] | None = None
    at: float = 0.0
    refreshing: bool = False
    generation: int = 0
    took: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Reader:
    """The dashboard's reads over one queue (thread-safe: pages run in a thread pool)."""

    def __init__(
        self,
        queue: Queue,
        *,
        counts_ttl: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.counts_ttl = counts_ttl
        self._monotonic = monotonic
        self._counts = _Cached()
        # Always JSON, whatever the application's codec: decoding a stored pickle
        # could run code, and a dashboard shows what it reads, it never runs it.
        self.codec = get_codec("json")

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.queue.storage.capabilities)

    # -- counts ------------------------------------------------------------------

    def stats(self, max_age: float | None = None) -> dict[str, WorkerStats]:
        """Per worker type counts. Once older than ``counts_ttl`` they are refreshed
        in the background and the kept ones returned; older than ``max_age``, they
        are refreshed before returning."""
        cache = self._counts
        with cache.lock:
            value, age = cache.value, self._monotonic() - cache.at
            ttl = max(self.counts_ttl, LOAD_FACTOR * cache.took)
            stale = value is not None and age > ttl and not cache.refreshing
            if stale:
                cache.refreshing = True
        if value is None or (max_age is not None and age > max_age):
            return self._refresh()
        if stale:
            threading.Thread(
                target=self._refresh, name="exqueue-dashboard-counts", daemon=True
            ).start()
        return value

    def _refresh(self) -> dict[str, WorkerStats]:
        with self._counts.lock:
            generation = self._counts.generation
        started = self._monotonic()
        try:
            value = self.queue.stats()
        finally:
            with self._counts.lock:
                self._counts.refreshing = False
        finished = self._monotonic()
        with self._counts.lock:
            self._counts.took = max(finished - started, 0.0)
            # A read begun before an action must not replace what the action made stale.
            if generation == self._counts.generation:
                self._counts.value, self._counts.at = value, finished
        return value

    def invalidate(self) -> None:
        """Forget the counts: the next read takes fresh ones (after an action)."""
        with self._counts.lock:
            self._counts.value = None
            self._counts.generation += 1

    def totals(self, stats: dict[str, WorkerStats]) -> dict[str, int]:
        keys = ("waiting", "scheduled", "running", "dead")
        return {k: sum(getattr(s, k) for s in stats.values()) for k in keys}

    def paused(self) -> frozenset[str] | None:
        """Paused worker types, or None when the store cannot pause them."""
        if PAUSE not in self.capabilities:
            return None
        # Queue.paused() where the core has it (issue 15), else the storage's own.
        source = getattr(self.queue, "paused", None) or getattr(self.queue.storage, "paused", None)
        return frozenset(source()) if source is not None else None

    def can_pause(self) -> bool:
        return PAUSE in self.capabilities and (
            hasattr(self.queue, "pause") or hasattr(self.queue.storage, "pause")
        )

    def set_paused(self, worker: str, paused: bool) -> None:
        """Pause or resume a worker type on every node (capability ``pause``)."""
        method = getattr(self.queue, "pause" if paused else "resume", None)
        if method is not None:
            method(worker)
        else:
            self.queue.storage.pause(worker, paused)  # type: ignore[attr-defined]

    def heads(self, workers: list[str]) -> dict[str, JobRecord]:
        """Each worker type's oldest job (lowest ``seq``, any state): for a serial
        type, its head, which it runs next or is blocked by (ask only for those)."""
        found = {}
        for name in workers:
            records = self.queue.storage.list_jobs(worker=name, limit=1)
            if records:
                found[name] = records[0]
        return found

    # -- jobs --------------------------------------------------------------------

    def page(
        self, chosen: Filter, after_seq: int | None
    ) -> tuple[list[tuple[Job, int]], int | None, bool]:
        """One page of ``(job, seq)`` matching ``chosen`` after ``after_seq``; the
        next page's cursor (None on the last page); and whether the page is partial:
        a tag filter stopped after :data:`SCAN_BUDGET` jobs before the page was full."""
        if chosen.tag is not None and METADATA not in self.capabilities:
            return [], None, False
        scanner = self._scanner()
        if chosen.tag is not None and scanner is not None:
            found = scanner.scan_jobs(self._scan(chosen, after_seq, PAGE_SIZE))
            jobs = [(Job.from_record(r, self.codec), r.seq) for r in found.jobs]
            partial = found.next_after is not None and len(found.jobs) < PAGE_SIZE
            return jobs, found.next_after, partial
        records = self.queue.storage.list_jobs(
            state=chosen.state,
            worker=chosen.worker,
            tag=chosen.tag,
            limit=PAGE_SIZE + 1,
            after_seq=after_seq,
        )
        more = len(records) > PAGE_SIZE
        records = records[:PAGE_SIZE]
        jobs = [(Job.from_record(r, self.codec), r.seq) for r in records]
        return jobs, (records[-1].seq if more else None), False

    def _scanner(self) -> SupportsJobScan | None:
        """The store, where it lists in bounded reads (capability job_scan)."""
        storage = self.queue.storage
        if JOB_SCAN in self.capabilities and isinstance(storage, SupportsJobScan):
            return storage
        return None

    def _scan(
        self, chosen: Filter, after_seq: int | None, limit: int, state: JobState | None = None
    ) -> JobScan:
        return JobScan(
            state=state or chosen.state,
            worker=chosen.worker,
            tag=chosen.tag,
            after_seq=after_seq,
            limit=limit,
            budget=SCAN_BUDGET,
        )

    def seq_of(self, job_id: str) -> int | None:
        record = self.queue.storage.get(job_id)
        return record.seq if record is not None else None

    def job(self, job_id: str) -> tuple[Job, JobRecord] | None:
        record = self.queue.storage.get(job_id)
        if record is None:
            return None
        return Job.from_record(record, self.codec), record

    def dead_matching(self, chosen: Filter) -> int:
        """How many dead jobs match the filter's worker and tag: the kept counts
        without a tag (seconds old at most; the action then acts on the jobs dead
        when it runs, and says how many), a scan of the matching dead jobs with one."""
        if chosen.tag is None:
            stats = self.stats()
            if chosen.worker is not None:
                row = stats.get(chosen.worker)
                return row.dead if row else 0
            return sum(s.dead for s in stats.values())
        return sum(len(batch) for batch in self.dead_batches(chosen))

    def dead_batches(self, chosen: Filter, size: int = 500) -> Any:
        """The dead jobs matching the filter's worker and tag, in ``seq`` pages. With a
        tag, where the store can, in bounded reads (each at most :data:`SCAN_BUDGET`
        jobs), so a rare tag never holds the store for one long scan."""
        if chosen.tag is not None and METADATA not in self.capabilities:
            return
        storage, scanner = self.queue.storage, self._scanner()
        after: int | None = None
        if chosen.tag is not None and scanner is not None:
            while True:
                found = scanner.scan_jobs(self._scan(chosen, after, size, DEAD))
                if found.jobs:
                    yield list(found.jobs)
                if found.next_after is None:
                    return
                after = found.next_after
        while batch := storage.list_jobs(
            state=DEAD, worker=chosen.worker, tag=chosen.tag, limit=size, after_seq=after
        ):
            yield batch
            after = batch[-1].seq

    # -- the rest ----------------------------------------------------------------

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def schedules(self) -> list[Any] | None:
        return self.queue.schedules() if SCHEDULES in self.capabilities else None

    def nodes(self) -> list[Any] | None:
        return self.queue.nodes() if NODES in self.capabilities else None

    def history(self, minutes: int) -> list[Any] | None:
        return self.queue.history(minutes=minutes) if HISTORY in self.capabilities else None
