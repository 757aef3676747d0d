"""A node killed with -9 while holding limited slots gives them back at lease recovery.

A real OS process (the first node) claims a partitioned, limited worker type up
to its limit in every partition and is killed with SIGKILL while it holds them.
Another process (this one, the second node) then finds every slot taken (the
killed node's leases still hold them), recovers the expired leases, and claims
the limited jobs itself, still within the limit. On SQLite, PostgreSQL, MariaDB
and Redis; the times are the caller's ``now``, so nothing sleeps for a lease.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import RUNNING, WAITING, LimitedClaim, Limits, NewJob, Storage
from tests.support.backends import backend_factory

T0 = 1_700_000_000.0
LEASE = 30.0
LIMITS = Limits(concurrency=2, partitioned=True)
PARTS = ("a", "b")


def _claim(storage: Any, owner: str, now: float, limit: int = 10) -> list[Any]:
    request = LimitedClaim("lim", limit, now, owner, f"{owner}-{now}", now + LEASE, LIMITS)
    return list(storage.claim_limited(request))


def _first_node(factory: Callable[[], Storage], ready: Any) -> None:
    """Claim every slot, say which jobs, then hang until killed."""
    storage = factory()
    claimed = _claim(storage, "node-1", T0)
    ready.send(sorted(r.id for r in claimed))
    signal.pause()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql", "redis"])
def test_a_killed_node_gives_its_slots_back_when_its_leases_are_recovered(
    backend: str, tmp_path: Path
) -> None:
    factory = backend_factory(backend, tmp_path)
    storage: Any = factory()
    try:
        storage.enqueue(
            [
                NewJob(f"{p}{i}", "lim", b"x", T0 - 10, T0 - 10, 3, partition=p)
                for i in range(3)
                for p in PARTS
            ]
        )
        ctx = multiprocessing.get_context("spawn")
        theirs, ours = ctx.Pipe(duplex=False)
        node = ctx.Process(target=_first_node, args=(factory, ours), daemon=True)
        node.start()
        try:
            assert theirs.poll(60), "the first node did not claim in time"
            held = theirs.recv()
            assert held == ["a0", "a1", "b0", "b1"]
        finally:
            os.kill(node.pid or 0, signal.SIGKILL)
            node.join(30)
        assert node.exitcode == -signal.SIGKILL

        # The killed node's leases still hold every slot: nothing more is claimed.
        assert _claim(storage, "node-2", T0 + 1) == []
        assert {storage.get(i).state for i in held} == {RUNNING}
        # Its leases expire; recovery sends the jobs back and frees the slots with them.
        recovered = storage.recover(T0 + LEASE + 1, error="worker lost")
        assert sorted(recovered.waiting) == held
        assert {storage.get(i).state for i in held} == {WAITING}
        # Recovered jobs run again at the recovery's now, behind a2 and b2 (run_at T0 - 10).
        mine = _claim(storage, "node-2", T0 + LEASE + 2)
        assert sorted(r.id for r in mine) == ["a0", "a2", "b0", "b2"]  # two per partition
        assert _claim(storage, "node-2", T0 + LEASE + 3) == []
        for record in mine:
            assert storage.complete(record.id, record.lease_token or "")
        last = _claim(storage, "node-2", T0 + LEASE + 4)
        assert sorted(r.id for r in last) == ["a1", "b1"]
    finally:
        if hasattr(storage, "destroy"):
            storage.destroy()
        storage.close()
