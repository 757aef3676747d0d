"""The storage protocol for bounded listing (capability :data:`JOB_SCAN`), re-exported by
:mod:`exqueue.storage`.

``Storage.list_jobs`` reads until ``limit`` jobs match or the store runs out: a
filter that matches few jobs among many (a tag on 100,000 dead jobs) reads them
all in one call, and on Redis holds the server that long. ``scan_jobs`` reads at
most ``budget`` candidates per call and says where to go on, so a caller (the
dashboard) can show a partial page with "searched N jobs, continue".

Rules (:meth:`SupportsJobScan.scan_jobs`). The *candidates* are the jobs matching
``state`` and ``worker`` (both when both are given) with ``seq > after_seq``, in
``seq`` order. A call reads a prefix of the candidates and returns the ones in it
whose ``meta[key] == value`` (every one, when ``tag`` is None), in ``seq``
order, at most ``limit`` of them; ``next_after`` is where the next call starts:

- None when no candidate is left after those read (the listing is complete);
- otherwise a ``seq > after_seq``: every candidate with ``seq <= next_after``
  was read, and those are at most ``budget`` (the bound that keeps a call
  short). So no matching job is ever skipped: following ``next_after`` until it
  is None lists exactly what ``list_jobs`` with the same filters lists.

A call may stop early (after ``limit`` matches, ``next_after`` is the last one's
``seq``). ``limit`` and ``budget`` below 1 are refused with ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from exqueue.storage import JobRecord, JobState

#: Implements :class:`SupportsJobScan`.
JOB_SCAN: Final = "job_scan"


@dataclass(frozen=True, slots=True)
class JobScan:
    """One bounded read: the filters of ``list_jobs``, and ``budget``, the most
    candidates (jobs passing ``state`` and ``worker``) the call may read."""

    state: JobState | None = None
    worker: str | None = None
    tag: tuple[str, str] | None = None
    after_seq: int | None = None
    limit: int = 100
    budget: int = 10_000

    def __post_init__(self) -> None:
        for name in ("limit", "budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"JobScan {name} must be an int >= 1, not {value!r}")
        if self.after_seq is not None and (
            isinstance(self.after_seq, bool) or not isinstance(self.after_seq, int)
        ):
            raise ValueError(f"JobScan after_seq must be an int or None, not {self.after_seq!r}")
        if self.tag is not None and not (
            isinstance(self.tag, tuple)
            and len(self.tag) == 2
            and all(isinstance(part, str) for part in self.tag)
        ):
            raise ValueError(f"JobScan tag must be a (key, value) pair of str, not {self.tag!r}")


@dataclass(frozen=True, slots=True)
class ScannedJobs:
    """What one :meth:`~SupportsJobScan.scan_jobs` call found, and where to go on
    (``next_after``: None when nothing is left to read)."""

    jobs: tuple[JobRecord, ...]
    next_after: int | None


@runtime_checkable
class SupportsJobScan(Protocol):
    """Optional capability :data:`JOB_SCAN`: listing in bounded steps."""

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        """Read at most ``scan.budget`` candidates after ``scan.after_seq``; return the
        matching ones (at most ``scan.limit``) and the next cursor (see the module)."""
        ...


def finish(found: list[JobRecord], limit: int, bound: int | None) -> ScannedJobs:
    """The result of a read of the candidates up to ``bound`` (None: to the end),
    whose matches in ``seq`` order are ``found``: cut at ``limit``, and the cursor."""
    if len(found) >= limit:
        return ScannedJobs(tuple(found[:limit]), found[limit - 1].seq)
    return ScannedJobs(tuple(found), bound)
