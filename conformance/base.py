"""What every targeted check shares: the Check record, a fresh store, job builders, rule asserts.

A targeted check proves one rule of the protocol on explicit edge cases (and,
where it helps, a small Hypothesis property on top). When it fails, its message
starts with the rule in words, so a backend author knows what to fix without
reading the check: ``rule broken: <the rule> -- <what was seen>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from conformance.session import StorageSession
from exqueue.storage import JobRecord, NewJob, Storage

if TYPE_CHECKING:
    # Only for annotations: spawned race children import this module, and
    # importing Hypothesis would slow each one down.
    from hypothesis import settings as Settings

StorageFactory = Callable[[], Storage]
T = TypeVar("T")

#: A realistic epoch time with a fraction that needs every bit of a double.
NOW = 1_700_000_000.123456789
#: A lease far beyond every check's clock.
LONG = 3600.0


@dataclass(frozen=True)
class Check:
    """One check: its name, its area, the capability it needs, and what it runs."""

    name: str
    #: The capability (or capabilities, all of them) the check needs; None: every backend.
    requires: str | tuple[str, ...] | None
    run: Callable[[StorageFactory, Settings], None]
    area: str = ""

    @property
    def needs(self) -> tuple[str, ...]:
        """The capabilities the backend must declare for this check to run."""
        if self.requires is None:
            return ()
        return (self.requires,) if isinstance(self.requires, str) else self.requires

    def missing(self, declared: frozenset[str]) -> str | None:
        """The first capability this check needs that ``declared`` lacks, or None."""
        return next((need for need in self.needs if need not in declared), None)

    @property
    def rule(self) -> str:
        """The rule the check proves: the first line of its docstring."""
        return (self.run.__doc__ or self.name).strip().splitlines()[0]


class RuleBroken(AssertionError):
    """A check saw the backend break a rule; the message states the rule first."""


def expect(condition: bool, rule: str, seen: object = "") -> None:
    """Fail with ``rule`` (the contract, in words) and what was ``seen`` unless ``condition``."""
    if not condition:
        raise RuleBroken(f"rule broken: {rule}" + (f" -- {seen}" if seen != "" else ""))


def implements(storage: object, protocol: Callable[..., T], rule: str) -> T:
    """``storage`` seen as ``protocol`` (an optional ``Supports*`` protocol), or fail with
    ``rule``: a backend declaring a capability must implement that protocol's methods."""
    # ``protocol`` is a runtime-checkable Protocol class. It is typed as a callable
    # returning T because mypy refuses a Protocol where ``type[T]`` is expected
    # (type-abstract), and this keeps the callers free of casts.
    expect(isinstance(storage, cast(type, protocol)), rule, type(storage).__name__)
    return cast(T, storage)


@contextmanager
def opened(factory: StorageFactory) -> Iterator[tuple[StorageSession, Storage]]:
    """A storage over the test's location, emptied first, closed afterwards."""
    session = StorageSession(factory)
    try:
        yield session, session.fresh()
    finally:
        session.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def job(
    job_id: str,
    worker: str,
    payload: bytes = b"",
    run_at: float = NOW,
    *,
    enqueued_at: float = NOW,
    max_attempts: int = 3,
    **v2: Any,
) -> NewJob:
    """A new job; ``v2`` takes the protocol-2 fields (priority, meta, unique, ...)."""
    return NewJob(
        id=job_id,
        worker=worker,
        payload=payload,
        run_at=run_at,
        enqueued_at=enqueued_at,
        max_attempts=max_attempts,
        **v2,
    )


def claim(
    storage: Storage,
    worker: str,
    limit: int = 1,
    *,
    now: float = NOW,
    token: str | None = None,
    owner: str = "node-a",
    lease_until: float | None = None,
    serial: bool = False,
) -> list[JobRecord]:
    return storage.claim(
        worker,
        limit,
        now=now,
        owner=owner,
        token=token or unique("tok"),
        lease_until=now + LONG if lease_until is None else lease_until,
        serial=serial,
    )


def ids(records: Sequence[JobRecord]) -> list[str]:
    return [record.id for record in records]


def got(storage: Storage, job_id: str) -> JobRecord:
    """The stored job, which must exist."""
    record = storage.get(job_id)
    expect(record is not None, f"get({job_id!r}) finds a job that is stored", "it returned None")
    assert record is not None
    return record


def run_to(storage: Storage, job_id: str, worker: str, *, now: float = NOW) -> str:
    """Claim ``job_id`` (the only runnable job of ``worker``); its token."""
    token = unique("tok")
    taken = claim(storage, worker, 1, now=now, token=token)
    expect(ids(taken) == [job_id], f"claim takes the runnable job {job_id!r}", ids(taken))
    return token


def limited(settings: Settings, cap: int) -> Settings:
    """``settings`` with at most ``cap`` examples: a focused property needs few."""
    from hypothesis import settings as Settings

    return Settings(settings, max_examples=min(settings.max_examples, cap))
