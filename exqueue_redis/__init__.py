"""RedisStorage: the exqueue storage protocol on Redis, one Lua script per transition.

Each transition (enqueue batch, claim batch, complete, retry, ...) is a single
EVALSHA of a script in :mod:`exqueue_redis._scripts`: atomic on the server and
one round trip. ``finish_and_claim`` runs the complete and claim scripts one
after the other in one script (:mod:`exqueue_redis._finish`). The backend holds
no policy; it applies what the core decides.

Key layout (version 2). ``ns`` is the namespace (default ``exqueue``); ``<w>`` a
worker name, ``<id>`` a job id and ``<k>`` a unique key, all as UTF-8 bytes.
Every key starts with the hash tag ``{ns}``, so one namespace (and so every
worker's keys) lives in one Redis Cluster slot and every script touches a
single node.

=========================  ==========  ===============================================
key                        type        holds
=========================  ==========  ===============================================
``{ns}:schema``            string      the layout version (``2``; see ``_layout``)
``{ns}:schema:log``        list        one line per in-place upgrade
``{ns}:seq``               string      the last sequence number handed out (INCR)
``{ns}:job:<id>``          hash        one job: ``id seq worker payload state attempt
                                       max_attempts run_at enqueued_at priority
                                       errors`` (the count of errors ever recorded),
                                       ``error:1`` and the last ERRORS_KEPT
                                       ``error:<i>`` (oldest first); when set ``meta``
                                       (JSON object of str), ``timeout expires_at
                                       unique_key unique_period``; while running
                                       ``lease_owner lease_token lease_expires
                                       started_at``. An absent ``priority`` is 0.
``{ns}:workers``           set         names of the workers that have any job
``{ns}:all:<w>``           zset        every job of ``<w>``: member id, score seq
                                       (serial head, ``list_jobs`` order)
``{ns}:ready:<w>``         zset        waiting jobs already due: score priority,
                                       member run_at (8 order-preserving bytes) +
                                       ``%016d`` seq + id, so ZRANGE from 0 gives
                                       ``(priority, run_at, seq)`` order
``{ns}:sched:<w>``         zset        waiting jobs not yet promoted: member ``%016d``
                                       seq + id, score run_at
``{ns}:expiry``            zset        waiting jobs with ``expires_at``: member
                                       ``%016d`` seq + id, score expires_at
``{ns}:running:<w>``       zset        running jobs: member id, score seq
``{ns}:dead:<w>``          zset        dead jobs: member id, score seq
``{ns}:leases``            zset        running jobs of all workers: member id, score
                                       lease_expires (``recover``)
``{ns}:u:<n>:<w>:<k>``     set         ids of stored jobs of ``<w>`` with unique key
                                       ``<k>`` (``<n>``: the length of ``<w>``, so no
                                       two pairs share a name)
``{ns}:ud:<n>:<w>:<k>``    hash        completion marker of that key: ``at`` (the
                                       complete's ``now``), ``period`` (the one the
                                       job was enqueued with), ``id``
``{ns}:udone``             zset        marker key names, score ``at + period``: the
                                       ones past it are deleted as markers are written
``{ns}:upgrade:lock``      string      held while a process upgrades the layout
``{ns}:paused``            set         paused worker types; ``{ns}:starts:...`` and
                                       the job field ``partition``: see ``_limits``
``{ns}:armed``             string      set by an idle waiter; the next transition that
                                       makes a job runnable deletes it and publishes
``{ns}:wake``              channel     pub/sub channel of those wake-ups
=========================  ==========  ===============================================

Claims. A job due when enqueued (``run_at <= enqueued_at``, the usual case)
goes straight into the ready set; a later one, and every job sent back to
waiting (retry, release, recover, requeue), into the scheduled set. A claim
first promotes up to ``PROMOTE_CHUNK`` (1000) due scheduled jobs (earliest
run_at first) into the ready set, then takes the ready set from its start:
O(log n) per job whatever the number waiting. A ready job found not yet due
(a clock moved back) returns to the scheduled set; an expired one is skipped
and left for ``expire``. Should more than PROMOTE_CHUNK scheduled jobs come due
between two claims, the rest are promoted by the next claims, earliest first.
A serial claim looks only at the head of ``all:<w>``.

Unique keys. Enqueue checks, in its script, the ids in ``u:<n>:<w>:<k>`` (a
holder in a counted state wins) and, with a period, the completion marker; the
batch's own earlier jobs come first. Markers use the caller's ``now``, not the
server's clock (so no PEXPIREAT): each marker written drops up to 16 markers
whose ``at + period`` has passed.

Floats (run_at, enqueued_at, lease_expires) are stored as Python ``repr``
strings, which round-trip exactly; sorted-set scores are the same doubles.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

from exqueue.errors import ConfigurationError, SchemaVersionError
from exqueue.storage import (
    ASYNC_ENQUEUE,
    CANCEL,
    COMPLETE_MANY,
    EXPIRED,
    HISTORY,
    LIMITS,
    MULTI_PROCESS,
    NODES,
    PAUSE,
    PERSISTENT,
    PROTOCOL_2,
    SCHEDULES,
    SERVER_CLOCK,
    SNOOZE,
    WAKEUP,
    Counts,
    DeleteResult,
    JobRecord,
    JobState,
    NewJob,
    Recovered,
    RequeueResult,
    clip_error,
)

try:
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ConfigurationError(
        f"the Redis backend needs the redis package ({exc}); install it with: "
        f'pip install "exqueue[redis]"'
    ) from exc

from exqueue.storage_next import FINISH_AND_CLAIM, FinishAndClaim, Finished
from exqueue.storage_scan import JOB_SCAN, JobScan, ScannedJobs
from exqueue_redis import _claim_script, _finish, _scripts, _scripts_read
from exqueue_redis._aio import RedisAsyncEnqueue
from exqueue_redis._client import connect, decodes_responses, glob_escape, quietly_close, redact
from exqueue_redis._control import RedisControl
from exqueue_redis._layout import LAYOUT_VERSION, open_layout
from exqueue_redis._limits import RedisLimits
from exqueue_redis._observe import RedisObserve
from exqueue_redis._prelude import with_prelude
from exqueue_redis._records import (
    _claim_reply,
    _claimed,
    _count,
    _enqueue_args,
    _number,
    _readable,
    _text,
)
from exqueue_redis._schedules import RedisSchedules
from exqueue_redis._wakeup import RedisWakeup

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py packs commands itself, a little slower
    _hiredis_pack = None

__all__ = ["RedisStorage"]

log = logging.getLogger("exqueue")

#: The key layout version this code writes (the ``{ns}:schema`` key).
SCHEMA_VERSION = str(LAYOUT_VERSION).encode()


class RedisStorage(
    RedisSchedules, RedisObserve, RedisControl, RedisAsyncEnqueue, RedisLimits, RedisWakeup
):
    """Jobs in Redis. ``RedisStorage("redis://127.0.0.1:6379/0", namespace="exqueue")``.

    ``client`` uses an existing ``redis.Redis`` or ``redis.cluster.RedisCluster``
    (the caller keeps ownership: ``close()`` leaves it open). ``cluster=True`` or
    ``?cluster=true`` in the URL connects to a Redis Cluster through that node.
    Commands are not retried by the client: a transition is applied at most once
    per call, and a lost server shows as ``redis.exceptions.ConnectionError``.
    """

    capabilities = frozenset(
        {PERSISTENT, MULTI_PROCESS, WAKEUP, COMPLETE_MANY, SERVER_CLOCK, SCHEDULES, NODES, HISTORY}
        | {CANCEL, SNOOZE, ASYNC_ENQUEUE, LIMITS, PAUSE, JOB_SCAN, FINISH_AND_CLAIM}
        | PROTOCOL_2
    )

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "exqueue",
        client: redis.Redis | RedisCluster | None = None,
        cluster: bool = False,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not namespace or "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"Redis namespace {namespace!r} must be non-empty and contain no braces"
            )
        self.namespace = namespace
        self._prefix = f"{{{namespace}}}:"
        self._owns_client = client is None
        self._url = url
        if client is None:
            client = connect(url, cluster, socket_timeout, connect_timeout)
        elif decodes_responses(client):
            raise ConfigurationError(
                "RedisStorage needs a client with decode_responses=False: payloads are bytes"
            )
        self._client: Any = client
        self._closed = False
        # Each thread's subscription, and whether a wait is using it now.
        self._pubsubs: dict[Any, bool] = {}
        self._pubsubs_lock = threading.Lock()
        # Connections for _run, taken from the client's pool and kept: idle ones
        # and every one ever taken (to hand back at close). Cluster clients route
        # each call themselves and use redis-py's script objects instead.
        self._direct = isinstance(client, redis.Redis)
        self._idle: list[Any] = []
        self._held: list[Any] = []
        self._local = threading.local()
        self._scripts = {
            name: client.register_script(_with_prelude(getattr(module, name)))
            for module, names in (
                (_scripts, ("ENQUEUE", "COMPLETE", "RETRY", "BURY", "RELEASE", "EXTEND",
                            "RECOVER", "DELETE", "REQUEUE")),
                (_claim_script, ("CLAIM",)),
                (_scripts_read, ("EXPIRE", "COUNTS", "LIST", "SCAN", "UPGRADE")),
                (_finish, ("FINISH",)),
            )
            for name in names
        }  # fmt: skip
        self._check_server()

    def _check_server(self) -> None:
        """Fail at once with one clear message when Redis does not answer."""
        try:
            self._client.ping()
            open_layout(self._client, self._prefix, self.namespace, self._run)
        except SchemaVersionError:
            self.close()
            raise
        except RedisConnectionError as exc:
            self.close()
            raise ConfigurationError(
                f"cannot reach Redis at {redact(self._url)}: {exc}; is the server running?"
            ) from None
        except RedisError as exc:
            self.close()
            raise ConfigurationError(f"Redis at {redact(self._url)} refused: {exc}") from None

    def _run(self, name: str, *args: bytes | str | int | float) -> Any:
        script = self._scripts[name]
        if not self._direct:
            return script(keys=[self._prefix], args=args)
        # The hot path: EVALSHA on a connection of our own. redis-py's per-command
        # machinery (pool checkout, retry wrapper, metrics) costs about as much
        # as the round trip itself on loopback.
        command = ("EVALSHA", script.sha, 1, self._prefix, *args)
        # hiredis packs the arguments as they are; redis-py would copy and check
        # each one first (about half the client's cost of a batch enqueue).
        packed = _hiredis_pack(command) if _hiredis_pack is not None else None
        conn = self._checkout()
        try:
            if packed is not None:
                conn.send_packed_command([packed])
            else:
                conn.send_command(*command)
            try:
                return conn.read_response()
            except NoScriptError:
                # The server lost its script cache (restart, SCRIPT FLUSH); nothing ran.
                conn.send_command("SCRIPT", "LOAD", script.script)
                conn.read_response()
                conn.send_command(*command)
                return conn.read_response()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            conn.disconnect()
            raise
        finally:
            # Back for reuse even after an error: a half-read reply left on it
            # makes the next checkout replace the connection.
            self._idle.append(conn)

    def _checkout(self) -> Any:
        try:
            conn = self._idle.pop()  # list.pop/append are atomic: no lock needed
        except IndexError:
            conn = self._client.connection_pool.get_connection()
            self._held.append(conn)
        # A connection the server closed (a restart) reads as EOF: replace it
        # before sending, so a command is never written into a dead socket.
        try:
            stale = conn.can_read(timeout=0)
        except (RedisConnectionError, OSError):
            stale = True
        if stale:
            conn.disconnect()
            try:
                conn.connect()
            except BaseException:
                self._idle.append(conn)
                raise
        return conn

    # -- transitions ---------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        args: list[bytes | str | int | float] = [len(jobs)]
        for job in jobs:
            args.extend(_enqueue_args(job))
        outcome, found = self._run("ENQUEUE", *args)
        if outcome == b"dup":
            raise ValueError(
                f"duplicate job id {found.decode()!r} in enqueue batch; nothing was enqueued"
            )
        return [holder.decode() for holder in found]

    def claim(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool = False,
    ) -> list[JobRecord]:
        if _count(limit, "claim limit", 0) == 0:
            return []
        now_text, lease_text = _number(now, "now"), _number(lease_until, "lease_until")
        flat = self._run(
            "CLAIM", worker, limit, now_text, owner, token, lease_text, "1" if serial else "0"
        )
        return self._claimed_records(flat, owner, token, now_text, lease_text)[0]

    def _claimed_records(
        self, flat: Any, owner: str, token: str, now_text: str, lease_text: str
    ) -> tuple[list[JobRecord], int]:
        """The records of a CLAIM reply and where the reply's claim part ends (FINISH
        has more after it); unreadable rows are buried."""
        damaged, rows, end = _claim_reply(flat)
        for job_id, reason in zip(damaged[::2], damaged[1::2], strict=True):
            log.error("job %s is dead: %s", _text(job_id), _text(reason))
        records = []
        # The lease as stored: the same text read back, as a record read later has it.
        started, expires = float(now_text), float(lease_text)
        for row in rows:
            try:
                records.append(_claimed(row, owner, token, expires, started))
            except (KeyError, ValueError, TypeError, OverflowError) as exc:
                # The script checked every field; should one still not read back,
                # the job dies alone rather than stay "running" unreturned.
                raw_id = row[0] or b""
                reason = f"damaged stored job: unreadable ({exc!r})"
                if self._run("BURY", raw_id, token, reason):
                    log.error("job %s is dead: %s", _text(raw_id), reason)
        return records, end

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        """``complete_many`` then ``claim`` in one script, so one round trip (FINISH)."""
        limit = _count(request.limit, "claim limit", 0)
        now_text = _number(request.now, "now")
        lease_text = _number(request.lease_until, "lease_until")
        pairs = [part for pair in request.done for part in pair]
        flat = self._run(
            "FINISH",
            len(request.done),
            now_text,
            *pairs,
            request.worker,
            limit,
            request.owner,
            request.token,
            lease_text,
            "1" if request.serial else "0",
        )
        records, end = self._claimed_records(
            flat, request.owner, request.token, now_text, lease_text
        )
        return Finished([job_id.decode() for job_id in flat[end:]], records)

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        when = "" if now is None else _number(now, "now")
        return bool(self._run("COMPLETE", when, job_id, token))

    def complete_many(
        self, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> list[str]:
        """``complete`` for every ``(job_id, token)`` pair in one script; the ids removed."""
        if not items:
            return []
        when = "" if now is None else _number(now, "now")
        args = [part for pair in items for part in pair]
        return [job_id.decode() for job_id in self._run("COMPLETE", when, *args)]

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        run_at_text = _number(run_at, "run_at")
        return bool(self._run("RETRY", job_id, token, run_at_text, clip_error(error)))

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        return bool(self._run("BURY", job_id, token, clip_error(error)))

    def release(self, job_id: str, token: str) -> bool:
        return bool(self._run("RELEASE", job_id, token))

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        if not job_ids:
            return []
        extended = self._run("EXTEND", token, _number(lease_until, "lease_until"), *job_ids)
        return [job_id.decode() for job_id in extended]

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        waiting, dead = self._run(
            "RECOVER",
            _number(now, "now"),
            clip_error(error),
            owner or "",
            "0" if owner is None else "1",
        )
        return Recovered(
            waiting=tuple(job_id.decode() for job_id in waiting),
            dead=tuple(job_id.decode() for job_id in dead),
        )

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        if _count(limit, "expire limit", 0) == 0:
            return []
        expired = self._run("EXPIRE", _number(now, "now"), limit, EXPIRED)
        return [job_id.decode() for job_id in expired]

    def get(self, job_id: str) -> JobRecord | None:
        fields = self._client.hgetall(self._prefix + "job:" + job_id)
        return _readable(fields) if fields else None

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        if limit <= 0:
            return []
        rows = self._run(
            "LIST",
            state or "",
            worker or "",
            "0" if worker is None else "1",
            limit,
            "-inf" if after_seq is None else int(after_seq),
            "0" if tag is None else "1",
            *(("", "") if tag is None else tag),
        )
        return [_readable(dict(zip(row[::2], row[1::2], strict=True))) for row in rows]

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        """A bounded ``list_jobs`` in one short script (capability JOB_SCAN)."""
        tag = scan.tag
        flat = self._run(
            "SCAN",
            scan.state or "",
            scan.worker or "",
            "0" if scan.worker is None else "1",
            scan.limit,
            "-inf" if scan.after_seq is None else scan.after_seq,
            "0" if tag is None else "1",
            *(("", "") if tag is None else tag),
            scan.budget,
        )
        jobs = tuple(_readable(dict(zip(row[::2], row[1::2], strict=True))) for row in flat[1:])
        return ScannedJobs(jobs, int(flat[0]) if flat[0] else None)

    def delete(self, job_id: str) -> DeleteResult:
        return cast(DeleteResult, self._run("DELETE", job_id).decode())

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        result = self._run("REQUEUE", job_id, new_id, _number(now, "now")).decode()
        if result == "exists":
            raise ValueError(f"job id {new_id!r} already exists")
        return cast(RequeueResult, result)

    def counts(self, now: float) -> dict[str, Counts]:
        flat = self._run("COUNTS", _number(now, "now"))
        return {
            flat[i].decode(): Counts(*(int(n) for n in flat[i + 1 : i + 5]))
            for i in range(0, len(flat), 5)
        }

    # -- lifecycle -----------------------------------------------------------

    def server_time(self) -> float:
        """Redis ``TIME`` (on a cluster, one node's), in epoch seconds."""
        found = self._client.time()
        if isinstance(found, dict):  # a cluster may answer per node
            found = next(iter(found.values()))
        seconds, micros = found
        return int(seconds) + int(micros) / 1e6

    def close(self) -> None:
        with self._pubsubs_lock:
            if self._closed:
                return
            self._closed = True
            idle = [pubsub for pubsub, busy in self._pubsubs.items() if not busy]
            for pubsub in idle:
                del self._pubsubs[pubsub]
        for pubsub in idle:
            quietly_close(pubsub)
        for conn in self._held:
            self._client.connection_pool.release(conn)
        self._held, self._idle = [], []
        if self._owns_client:
            self._client.close()

    def destroy(self) -> None:
        """Delete every key of this namespace (tests, teardown). Jobs are lost."""
        pattern = glob_escape(self._prefix) + "*"
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                self._client.delete(*batch)
                batch = []
        if batch:
            self._client.delete(*batch)


@functools.cache
def _with_prelude(body: str) -> str:
    return with_prelude(body)
