"""Heartbeat, recovery and expiry: keeping this node's leases, handing back lost
workers' jobs, burying jobs not started before their ``expires_at``.

The heartbeat extends the lease of every job this node holds, every third of
a lease, and now and then recovers jobs whose lease ran out on any node
(``Storage.recover`` applies :func:`exqueue.policy.attempts_left` atomically)
and, on backends with ``EXPIRY``, moves expired waiting jobs to dead
(``Storage.expire``), telling the dead reporters of each. A backend never
claims an expired job, so expiry only has to be timely for the report.

Leases are compared with each node's own ``now``. Where the storage has a
clock of its own (``SERVER_CLOCK``), the node compares its clock with it at
start and on every heartbeat: off by more than ``MAX_SKEW`` of a lease, the node
neither claims nor recovers (a fast clock would take other nodes' live jobs
as expired, a slow one would find nothing due), logs an error naming the
skew, and goes on once the clocks agree again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from exqueue.errors import JobExpiredError
from exqueue.runtime.config import Ledger, NodeConfig
from exqueue.runtime.observe import Observer
from exqueue.storage import (
    CANCEL,
    EXPIRED,
    EXPIRY,
    SERVER_CLOCK,
    WORKER_LOST,
    SupportsCancel,
    SupportsServerClock,
)

log = logging.getLogger("exqueue")

#: The largest clock skew, as a fraction of the lease, at which a node claims
#: and recovers. Leases are extended every third of a lease, so a live job's
#: lease has at least two thirds of a lease left: a quarter keeps a wide margin
#: for the time a heartbeat takes.
MAX_SKEW = 0.25
#: Expired jobs buried per ``Storage.expire`` call, and calls per round at most
#: (the rest wait for the next round, so a backlog never stalls the heartbeat).
EXPIRE_BATCH = 500
EXPIRE_CALLS = 10


class Leases:
    """Extends this node's leases and recovers expired ones."""

    def __init__(self, config: NodeConfig, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        self.wake = ledger.wake
        self.stopping = ledger.stopping
        #: Counts the deaths this node records for the store's history (set by the runtime).
        self.observer: Observer | None = None
        #: Told of each held job whose cancellation was requested (see ``heartbeat``).
        self.on_cancel: Callable[[str], object] | None = None

    def loop(self) -> None:
        interval = self.config.lease / 3
        last_recovery = time.monotonic()
        while not self.stopping.wait(interval):
            try:
                self.check_clock()
                self.heartbeat()
                if self.ledger.skewed.is_set():
                    continue
                if time.monotonic() - last_recovery >= self.config.lease / 2:
                    last_recovery = time.monotonic()
                    self.recover()
                    self.expire()
            except Exception as exc:
                log.warning("heartbeat failed (%s); retrying in %.1fs", exc, interval)

    def check_clock(self) -> None:
        """Compare this node's clock with the storage's; set or clear ``ledger.skewed``."""
        storage = self.config.storage
        if not self.config.check_clock:
            return
        if SERVER_CLOCK not in storage.capabilities or not isinstance(storage, SupportsServerClock):
            return
        clock = self.config.clock
        before = clock()
        server = storage.server_time()
        skew = (before + clock()) / 2 - server
        limit = MAX_SKEW * self.config.lease
        skewed = self.ledger.skewed
        if abs(skew) > limit:
            if not skewed.is_set():
                skewed.set()
                log.error(
                    "this node's clock is %.1fs %s the storage server's (more than %.1fs, "
                    "a quarter of the %gs lease): not claiming or recovering jobs until the "
                    "clocks agree; synchronize this machine's clock (NTP)",
                    abs(skew),
                    "ahead of" if skew > 0 else "behind",
                    limit,
                    self.config.lease,
                )
        elif skewed.is_set():
            skewed.clear()
            log.warning("this node's clock agrees with the storage's again: claiming again")
            self.wake.set()

    def heartbeat(self) -> None:
        ledger = self.ledger
        with ledger.lock:
            by_token: dict[str, list[str]] = {}
            for job_id, token in ledger.held.items():
                by_token.setdefault(token, []).append(job_id)
        lease_until = self.config.clock() + self.config.lease
        for token, job_ids in by_token.items():
            kept = set(self.config.storage.extend(token, job_ids, lease_until))
            with ledger.lock:
                # Not extended: lost, or finished since the snapshot (its outcome may be
                # written while it is still held). Either way this node stops holding it.
                gone = [j for j in job_ids if j not in kept and ledger.held.get(j) == token]
                for job_id in gone:
                    del ledger.held[job_id]
            storage = self.config.storage
            if kept and CANCEL in storage.capabilities and isinstance(storage, SupportsCancel):
                # A cancel marks a running job; its holder learns it here and stops it.
                for job_id in storage.cancel_requested(token, sorted(kept)):
                    if self.on_cancel is not None:
                        self.on_cancel(job_id)
            if gone:
                # No warning here: only the job's outcome, fenced by its token, can
                # tell a lost lease from a success just written; it warns if lost.
                log.debug("jobs %s no longer held under their lease", ", ".join(gone))

    def recover(self, owner: str | None = None) -> None:
        config = self.config
        recovered = config.storage.recover(config.clock(), owner=owner, error=WORKER_LOST)
        if recovered.waiting:
            log.warning("recovered %d jobs of lost workers", len(recovered.waiting))
            self.wake.set()
        for job_id in recovered.dead:
            log.error(
                "job %s is dead: its worker was lost on its last attempt",
                job_id,
                extra={"job_id": job_id},
            )
            if self.observer is not None:
                self.observer.dead_by_id(job_id)
            config.report_dead(job_id, None)

    def expire(self) -> int:
        """Bury waiting jobs past their ``expires_at`` and report each; how many."""
        config = self.config
        storage = config.storage
        if EXPIRY not in storage.capabilities:
            return 0
        total = 0
        for _ in range(EXPIRE_CALLS):
            expired = storage.expire(config.clock(), limit=EXPIRE_BATCH)
            for job_id in expired:
                log.error("job %s is dead: %s", job_id, EXPIRED, extra={"job_id": job_id})
                if self.observer is not None:
                    self.observer.dead_by_id(job_id)
                config.report_dead(job_id, JobExpiredError(f"job {job_id} {EXPIRED}"))
            total += len(expired)
            if len(expired) < EXPIRE_BATCH:
                break
        return total
