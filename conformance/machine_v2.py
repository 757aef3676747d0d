"""The state machine's protocol-2 draws: priorities, metadata, unique keys, expiry.

A mixin of :class:`conformance.machine.StorageMachine`. It adds no rules of its
own (more rules would make Hypothesis pick each of the others less often, and
the machine find less): the machine's broad rules draw these as variants (an
enqueue of a keyed batch, an expire() as time passes, a tag filter on a
listing). Each draw is behind the capability it needs, so a backend that declares none of
:data:`~exqueue.storage.PROTOCOL_2` sees version 1's jobs only (priority 0, no
meta, no key, no expiry) and the model orders them as version 1 did.

Unique enqueues draw keys from a small set over two plain worker types and a
serial one, so a key held by another worker type, by a job in a state the new
job does not name, or by a job completed within its period all come up often.
The clock only moves forward, so a backend that drops completion markers once
their period has passed agrees with the model, which keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from conformance.base import implements
from conformance.model import Model
from conformance.session import SERIAL_WORKERS, WORKERS
from exqueue.storage import (
    DEAD,
    EXPIRY,
    JOB_SCAN,
    METADATA,
    PRIORITY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    RUNNING,
    UNIQUE,
    WAITING,
    JobScan,
    JobState,
    NewJob,
    Storage,
    SupportsJobScan,
    Unique,
)

priorities = st.sampled_from((0, 1, 0, -1, 3, PRIORITY_MIN, PRIORITY_MAX))
#: Unicode and empty strings: a backend that drops an empty value, or mangles
#: non-ASCII text in a JSON column, shows up.
METAS: tuple[dict[str, str], ...] = (
    {},
    {},
    {"tenant": "acme"},
    {"tenant": "ünï ✓ 名前", "trace": ""},
    {"trace": "00-0af7651916cd43dd8448eb211c80319c-01", "tenant": "acme"},
)
metas = st.sampled_from(METAS)
timeouts = st.sampled_from((None, None, 30.0, 0.25))
#: Seconds from now to ``expires_at`` (0: expired at enqueue already).
expiries = st.sampled_from((None, None, None, 0.0, 0.5, 1.0, 2.0, 30.0))
#: Tags that match some jobs, and near misses (case, an empty value, a LIKE pattern).
TAGS = (
    ("tenant", "acme"),
    ("tenant", "ünï ✓ 名前"),
    ("trace", ""),
    ("tenant", "ACME"),
    ("tenant", "%"),
)
#: Keys shared across worker types, with SQL pattern characters and non-ASCII.
KEYS = ("k1", "k2", "ключ·%_")
UNIQUE_WORKERS = (WORKERS[0], WORKERS[1], SERIAL_WORKERS[0])
STATE_SETS: tuple[frozenset[JobState], ...] = (
    frozenset({WAITING, RUNNING}),
    frozenset(),
    frozenset({RUNNING}),
    frozenset({RUNNING, DEAD}),
    frozenset({WAITING, DEAD}),
)
periods = st.sampled_from((None, None, 1.0, 5.0))


class ProtocolTwoRules:
    """Draws and rules for the protocol-2 fields (mixed into the state machine)."""

    if TYPE_CHECKING:
        model: Model
        storage: Storage
        capabilities: frozenset[str]
        now: float
        nonce: str
        touched: set[str]
        real_seq: dict[str, int]

        def _new_job(
            self, worker: str, delay: float, max_attempts: int, payload: bytes, **v2: Any
        ) -> NewJob: ...

        def _enqueue(self, batch: Sequence[NewJob]) -> None: ...

    def _v2_fields(self, data: st.DataObject, *, keyed: bool = False) -> dict[str, Any]:
        """The protocol-2 fields of one new job, each drawn when its capability is declared."""
        caps = self.capabilities
        fields: dict[str, Any] = {}
        if PRIORITY in caps:
            fields["priority"] = data.draw(priorities, label="priority")
        if METADATA in caps:
            fields["meta"] = data.draw(metas, label="meta")
            fields["timeout"] = data.draw(timeouts, label="timeout")
        if EXPIRY in caps:
            expires = data.draw(expiries, label="expires in")
            fields["expires_at"] = None if expires is None else self.now + expires
        if UNIQUE in caps and (keyed or data.draw(st.integers(0, 4), label="keyed") == 0):
            # Completion markers outlive the emptying between examples (nothing in
            # the protocol removes them), and each example restarts the clock: a
            # per-example suffix keeps an earlier example's markers out of this one.
            key = data.draw(st.sampled_from(KEYS), label="key")
            fields["unique"] = Unique(
                f"{key}·{self.nonce}",
                data.draw(st.sampled_from(STATE_SETS), label="states"),
                data.draw(periods, label="period"),
            )
        return fields

    def _holders_match(
        self, batch: Sequence[NewJob], answers: list[frozenset[str]], got: object
    ) -> None:
        """``enqueue``'s result names, per job, its own id or one holder of its key."""
        pairs = zip(batch, answers, strict=True)
        if got is None and all(job.id in allowed for job, allowed in pairs):
            return  # a version-1 backend: None means every job was stored
        call = f"enqueue({[job.id for job in batch]})"
        assert isinstance(got, list) and len(got) == len(batch), (
            f"{call} returned {got!r}, expected a list of one id per job"
        )
        for job, allowed, holder in zip(batch, answers, got, strict=True):
            if holder in allowed:
                continue
            if job.id in allowed:
                raise AssertionError(
                    f"{call}: job {job.id!r} (unique={job.unique}) holds no duplicate key and "
                    f"must be stored, returning its own id; got {holder!r}"
                )
            raise AssertionError(
                f"{call}: job {job.id!r} (worker={job.worker!r}, unique={job.unique}, "
                f"enqueued_at={job.enqueued_at}) is a duplicate of {sorted(allowed)}: it must "
                f"store nothing and return the holder's id; got {holder!r}"
            )

    def _keyed_batch(self, data: st.DataObject, size: int) -> list[NewJob]:
        """A batch of keyed jobs over a few keys and worker types (duplicates likely)."""
        return [
            self._new_job(
                data.draw(st.sampled_from(UNIQUE_WORKERS), label="worker"),
                data.draw(st.sampled_from((0.0, 0.0, 1.0)), label="delay"),
                data.draw(st.integers(1, 2), label="max_attempts"),
                b"",
                **self._v2_fields(data, keyed=True),
            )
            for _ in range(size)
        ]

    def _expire_due(self, data: st.DataObject) -> None:
        """expire() buries waiting jobs past expires_at, oldest seq first, up to limit."""
        limit = data.draw(st.sampled_from((1, 2, 1000)), label="expire limit")
        expected = self.model.expire(self.now, limit=limit)
        got = self.storage.expire(self.now, limit=limit)
        assert list(got) == expected, (
            f"expire(now={self.now}, limit={limit}) returned {list(got)}, expected {expected} "
            "(waiting jobs with expires_at <= now, oldest seq first)"
        )
        self.touched.update(expected)

    def _tag(self, data: st.DataObject) -> tuple[str, str] | None:
        """A tag filter for list_jobs, or None (always None without METADATA)."""
        if METADATA not in self.capabilities:
            return None
        return data.draw(st.one_of(st.none(), st.sampled_from(TAGS)), label="tag")

    def _scan_page(
        self,
        data: st.DataObject,
        filters: tuple[JobState | None, str | None, tuple[str, str] | None],
        limit: int,
        model_after: int | None,
        real_after: int | None,
    ) -> bool:
        """With JOB_SCAN, sometimes list by ``scan_jobs`` instead (a small budget): the
        jobs are exactly the model's matches up to its cursor, read within the budget.
        False when not drawn (the caller lists with list_jobs)."""
        if JOB_SCAN not in self.capabilities or not data.draw(st.booleans(), label="scan"):
            return False
        scanner = implements(self.storage, SupportsJobScan, "a JOB_SCAN backend has scan_jobs")
        state, worker, tag = filters
        budget = data.draw(st.integers(1, 5), label="budget")
        limit = max(limit, 1)
        scan = JobScan(state, worker, tag, real_after, limit, budget)
        got = scanner.scan_jobs(scan)
        candidates = self.model.list_jobs(
            state=state, worker=worker, limit=1_000_000, after_seq=model_after
        )
        matching = set(
            self.model.list_jobs(
                state=state, worker=worker, limit=1_000_000, after_seq=model_after, tag=tag
            )
        )
        end = got.next_after
        covered = [i for i in candidates if end is None or self.real_seq[i] <= end]
        expected = [i for i in covered if i in matching][:limit]
        assert [r.id for r in got.jobs] == expected and len(covered) <= budget, (
            f"scan_jobs({scan}) returned {[r.id for r in got.jobs]} with next_after={end}, "
            f"expected {expected} (the matches among the candidates up to next_after, which "
            f"are at most budget; candidates {candidates})"
        )
        assert end is None or real_after is None or end > real_after, f"{scan}: next_after {end}"
        return True
