"""The SQL backend's one transaction runner and its one retry loop.

Every protocol call is one short transaction (or one autocommit statement).
Deadlocks, serialization failures, a busy database and a connection that broke
before COMMIT was sent are run again on a fresh connection, a few times, with
a short random pause; every other error is raised.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from exqueue_sql._dialect import Dialect

T = TypeVar("T")

_RETRIES = 6  # deadlocks and serialization failures are retried this often


class Attempt:
    """One try of a transaction; ``committing`` is set once COMMIT may have been sent."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


class Runner:
    """Runs work in transactions on ``engine``, with the dialect's engines and hooks."""

    def __init__(self, engine: Engine, dialect: Dialect) -> None:
        self.engine = engine
        self.dialect = dialect

    def run(
        self,
        work: Callable[[Connection], T],
        *,
        read: bool = False,
        relaxed: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``work`` in one transaction, retrying deadlocks and serialization failures.

        ``relaxed`` marks a transition whose loss in a database crash only makes a
        job run again (a claim, a success, a lease extension): a dialect may commit
        it without waiting for the disk. Enqueues, retries and deaths always wait,
        so a job is never lost and no error goes unrecorded. ``single`` says
        ``work`` is one statement, which runs without BEGIN or COMMIT where the
        dialect offers an autocommit engine. ``read`` tags a read-only transaction.
        """
        fast = self.dialect.single_engine(relaxed) if single else None
        if fast is not None:
            engine = fast

            def once(attempt: Attempt) -> T:
                with engine.connect() as conn:
                    return work(conn)

            return self.retrying(once)

        def transaction(attempt: Attempt) -> T:
            with self.dialect.lock, self.engine.connect() as conn:
                if read:
                    conn.execution_options(exqueue_read=True)
                with conn.begin():
                    self.dialect.begin(conn, relaxed)
                    result = work(conn)
                    attempt.committing = True
                return result

        return self.retrying(transaction)

    def retrying(self, once: Callable[[Attempt], T]) -> T:
        """Call ``once`` until it returns, while its error is safe to run again."""
        for n in range(_RETRIES):
            attempt = Attempt()
            try:
                return once(attempt)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    # A connection that broke before COMMIT was sent committed
                    # nothing, so the transaction runs again on a fresh one.
                    again = not attempt.committing
                else:
                    again = self.dialect.transient(exc)
                if n == _RETRIES - 1 or not again:
                    self.dialect.failed(exc)
                    raise
            time.sleep(random.uniform(0.001, 0.01) * 2**n)
        raise AssertionError("unreachable")


def connection_of(transaction: object) -> Connection:
    """The connection under a caller's Connection, Session or Transaction (enqueue_in)."""
    if isinstance(transaction, Connection):
        return transaction
    from sqlalchemy.engine import Transaction
    from sqlalchemy.orm import Session

    if isinstance(transaction, Session):
        return transaction.connection()
    if isinstance(transaction, Transaction):
        return transaction.connection
    raise TypeError(
        "enqueue_in needs a SQLAlchemy Connection, Transaction or Session, "
        f"not {type(transaction).__name__}"
    )
