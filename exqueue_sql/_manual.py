"""SQLStorage's reads and manual operations: ``get``, ``list_jobs``, ``counts``,
``delete`` and ``requeue`` (a base class of :class:`exqueue_sql.SQLStorage`).

Each is one short transaction through the storage's runner; ``delete`` and
``requeue`` lock the job's row first, so they never interleave with a claim or
a transition of the same job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, Table, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError

from exqueue.storage import (
    DEAD,
    RUNNING,
    WAITING,
    Counts,
    DeleteResult,
    JobRecord,
    JobState,
    RequeueResult,
)
from exqueue.storage_scan import JobScan, ScannedJobs
from exqueue_sql import _listing
from exqueue_sql._records import readable

if TYPE_CHECKING:
    from exqueue_sql._dialect import Dialect
    from exqueue_sql._runner import Runner


class SQLManual:
    """The reads and manual operations of :class:`exqueue_sql.SQLStorage`."""

    _jobs: Table
    _dialect: Dialect
    _runner: Runner

    # -- reading -----------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        stmt = select(self._jobs).where(self._jobs.c.id == job_id)
        row = self._runner.run(lambda conn: conn.execute(stmt).first(), read=True)
        return None if row is None else readable(row)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        """Jobs in ``seq`` order; ``tag=(key, value)`` keeps those with ``meta[key] == value``.

        See ``_listing.list_jobs`` for how the tag filter reads the stored meta.
        """
        return _listing.list_jobs(
            self._runner, self._jobs, state=state, worker=worker, limit=limit,
            after_seq=after_seq, tag=tag,
        )  # fmt: skip

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        """A bounded ``list_jobs`` (capability JOB_SCAN): see ``_listing.scan_jobs``."""
        return _listing.scan_jobs(self._runner, self._jobs, scan)

    def counts(self, now: float) -> dict[str, Counts]:
        return _listing.counts(self._runner, self._jobs, now)

    # -- manual operations -------------------------------------------------------

    def delete(self, job_id: str) -> DeleteResult:
        j = self._jobs.c

        def work(conn: Connection) -> DeleteResult:
            state = conn.scalar(select(j.state).where(j.id == job_id).with_for_update())
            if state is None:
                return "missing"
            if state == RUNNING:
                return "running"
            conn.execute(sql_delete(self._jobs).where(j.id == job_id))
            return "deleted"

        return self._runner.run(work)

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        j = self._jobs.c

        def work(conn: Connection) -> RequeueResult:
            state = conn.scalar(select(j.state).where(j.id == job_id).with_for_update())
            if state is None:
                return "missing"
            if state != DEAD:
                return "not_dead"
            if conn.scalar(select(j.seq).where(j.id == new_id)) is not None:
                raise ValueError(f"job id {new_id!r} already exists")
            try:
                conn.execute(
                    update(self._jobs)
                    .where(j.id == job_id)
                    .values(
                        id=new_id,
                        state=WAITING,
                        attempt=0,
                        run_at=now,
                        errors="[]",
                        error_count=0,
                        expires_at=None,
                    )
                )
            except IntegrityError as exc:
                raise ValueError(f"job id {new_id!r} already exists") from exc
            self._dialect.notify(conn)
            return "requeued"

        return self._runner.run(work)
