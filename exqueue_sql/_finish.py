"""SQLStorage's ``finish_and_claim`` (a base class of :class:`exqueue_sql.SQLStorage`).

A job thread that has just finished a job writes its success and claims its
next job in one call (``exqueue.storage_next``). Here both are one transaction,
or, where the dialect writes them as one statement (PostgreSQL, for a type that
is not serial), one autocommit statement: one round trip and one commit where
``complete_many`` then ``claim`` take two of each. Each part keeps the rules of
its own call: a pair whose token no longer holds completes nothing, a paused
type claims nothing, a serial type's next head is claimable once the successes
delete the head before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection

from exqueue.storage import JobRecord, Storage
from exqueue.storage_next import FinishAndClaim, Finished, claim_requested
from exqueue_sql._dialect import Lease
from exqueue_sql._prepared import chunked

if TYPE_CHECKING:
    from exqueue_sql._dialect import Dialect
    from exqueue_sql._runner import Runner


class SQLFinish:
    """:meth:`finish_and_claim` of :class:`exqueue_sql.SQLStorage`."""

    _dialect: Dialect
    _runner: Runner

    if TYPE_CHECKING:
        # Defined by SQLStorage: the parts of claim and complete
        # that run inside a caller's transaction.
        def _good(self, conn: Connection, found: Any) -> list[JobRecord]: ...

        def _claim_many(
            self, conn: Connection, worker: str, limit: int, now: float, lease: Lease
        ) -> list[JobRecord]: ...

        def _claim_serial(
            self, conn: Connection, worker: str, now: float, lease: Lease
        ) -> list[JobRecord]: ...

        def _keep(
            self, conn: Connection, chunks: list[list[tuple[str, str]]], now: float
        ) -> list[str]: ...

        def complete_many(
            self, items: list[tuple[str, str]], *, now: float | None = None
        ) -> list[str]: ...

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        """``complete_many(request.done, now=request.now)``, then ``claim(...)``, in one
        transaction (one statement on PostgreSQL for a type that is not serial)."""
        pairs = list(dict.fromkeys(request.done))
        now, worker, limit = request.now, request.worker, request.limit
        lease = Lease(request.owner, request.token, request.lease_until)
        if not pairs:
            # At runtime ``self`` is an SQLStorage (this class is one of its bases).
            return Finished([], claim_requested(cast("Storage", self), request))
        if limit <= 0:
            return Finished(_in_order(pairs, self.complete_many(pairs, now=now)), [])
        dialect = self._dialect
        if not request.serial and dialect.finishes_in_one_statement:

            def together(conn: Connection) -> tuple[list[str], list[JobRecord]]:
                done, found = dialect.finish_and_claim(conn, pairs, now, worker, limit, lease)
                # A damaged row the claim took is buried by a second statement, as in claim.
                return done, self._good(conn, found)

            done, claimed = self._runner.run(together, relaxed=True, single=True)
            return Finished(_in_order(pairs, done), claimed)

        def transaction(conn: Connection) -> tuple[list[str], list[JobRecord]]:
            done = self._complete_in(conn, pairs, now)
            if request.serial:
                return done, self._claim_serial(conn, worker, now, lease)
            return done, self._claim_many(conn, worker, limit, now, lease)

        done, claimed = self._runner.run(transaction, relaxed=True)
        return Finished(_in_order(pairs, done), claimed)

    def _complete_in(self, conn: Connection, pairs: list[tuple[str, str]], now: float) -> list[str]:
        """``complete_many``'s deletions and completion markers, in ``conn``'s transaction."""
        dialect = self._dialect
        chunks = list(chunked(pairs))
        if dialect.marks_in_one_statement:
            return [i for chunk in chunks for i in dialect.complete_marking(conn, chunk, now)]
        # Most jobs leave no marker: one DELETE; the others are read, deleted and marked.
        done = [i for chunk in chunks for i in dialect.complete_plain(conn, chunk, True)]
        if len(done) == len(pairs):
            return done
        return done + self._keep(conn, chunks, now)


def _in_order(pairs: list[tuple[str, str]], done: list[str]) -> list[str]:
    """The completed ids in the order of the request's pairs (a database returns its own)."""
    deleted = set(done)
    return list(dict.fromkeys(job_id for job_id, _ in pairs if job_id in deleted))
