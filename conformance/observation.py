"""The state machine's observation after every step: everything a caller can see.

``list_jobs()`` (every stored job, every field, in ``seq`` order), one state and
one worker filter in turn, ``counts(now)``, and ``get`` of every id the step
touched, each compared with the model (:class:`~conformance.model.Model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conformance.session import ALL_WORKERS, LIST_ALL
from exqueue.storage import STATES

if TYPE_CHECKING:
    from conformance.machine import StorageMachine


def observe(machine: StorageMachine) -> None:
    """Compare what ``machine.storage`` shows with ``machine.model`` (raises on a difference)."""
    expected_ids = [job.id for job in machine.model.ordered()]
    everything = machine.storage.list_jobs(limit=LIST_ALL)
    assert [r.id for r in everything] == expected_ids, (
        f"list_jobs() returned {[r.id for r in everything]}, expected {expected_ids} "
        "(every stored job, in seq order)"
    )
    for record in everything:
        machine._check(record)
    seqs = [r.seq for r in everything]
    assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), (
        f"seq values are not strictly increasing in list order: {seqs}"
    )
    # The filtered listings take turns (one state and one worker per step, plus
    # the random list_page rule): list_jobs() above already compared every
    # field of every job, and a query per filter per step would triple the
    # cost of the suite on a networked backend for little extra power.
    machine.observed += 1
    state = STATES[machine.observed % len(STATES)]
    worker = ALL_WORKERS[machine.observed % len(ALL_WORKERS)]
    for got, want, call in (
        (
            machine.storage.list_jobs(state=state, limit=LIST_ALL),
            machine.model.list_jobs(state=state, limit=LIST_ALL),
            f"list_jobs(state={state!r})",
        ),
        (
            machine.storage.list_jobs(worker=worker, limit=LIST_ALL),
            machine.model.list_jobs(worker=worker, limit=LIST_ALL),
            f"list_jobs(worker={worker!r})",
        ),
    ):
        got_ids = [r.id for r in got]
        assert got_ids == want, f"{call} returned {got_ids}, expected {want}"
    counts = machine.storage.counts(machine.now)
    want_counts = machine.model.counts(machine.now)
    assert counts == want_counts, (
        f"counts(now={machine.now}) returned {counts}, expected {want_counts}"
    )
    # get() of every id this step touched (removed ones must be gone); every
    # stored job's full record was compared through list_jobs() above, and a
    # reopen marks every id as touched. A get per stored job per step doubled
    # the cost on PostgreSQL and MariaDB without finding anything more.
    for job_id in sorted(machine.touched):
        found = machine.storage.get(job_id)
        if job_id in machine.model.jobs:
            assert found is not None, f"get({job_id!r}) returned None; the job exists"
            machine._check(found)
        else:
            assert found is None, f"get({job_id!r}) returned a job; it should be gone"
    machine.touched.clear()
