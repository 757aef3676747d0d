"""RedisStorage: the exqueue storage protocol on Redis, one Lua script per transition.

Each transition (enqueue batch, claim batch, complete, retry, ...) is a single
EVALSHA of a script in :mod:`exqueue_redis._scripts`: atomic on the server and
one round trip. The backend holds no policy; it applies what the core decides.

Key layout. ``ns`` is the namespace (default ``exqueue``); ``<w>`` a worker name
and ``<id>`` a job id, both as UTF-8 bytes. Every key starts with the hash tag
``{ns}``, so one namespace lives in one Redis Cluster slot and every script
touches a single node.

=========================  ==========  ===============================================
key                        type        holds
=========================  ==========  ===============================================
``{ns}:schema``            string      the layout version (``1``)
``{ns}:seq``               string      the last sequence number handed out (INCR)
``{ns}:job:<id>``          hash        one job: ``id seq worker payload state attempt
                                       max_attempts run_at enqueued_at errors`` (the
                                       count of errors ever recorded), ``error:1``
                                       and the last ERRORS_KEPT ``error:<i>``, up to
                                       ``error:<errors>`` (oldest first) and, while
                                       running, ``lease_owner lease_token
                                       lease_expires started_at``
``{ns}:workers``           set         names of the workers that have any job
``{ns}:all:<w>``           zset        every job of ``<w>``: member id, score seq
                                       (serial head, ``list_jobs`` order)
``{ns}:waiting:<w>``       zset        waiting jobs: member ``%016d`` seq + id, score
                                       run_at; equal run_at sorts by member = seq
``{ns}:running:<w>``       zset        running jobs: member id, score seq
``{ns}:dead:<w>``          zset        dead jobs: member id, score seq
``{ns}:leases``            zset        running jobs of all workers: member id, score
                                       lease_expires (``recover``)
``{ns}:armed``             string      set by an idle waiter; the next transition that
                                       makes a job runnable deletes it and publishes
``{ns}:wake``              channel     pub/sub channel of those wake-ups
=========================  ==========  ===============================================

Floats (run_at, enqueued_at, lease_expires) are stored as Python ``repr``
strings, which round-trip exactly; sorted-set scores are the same doubles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from exqueue.errors import ConfigurationError, SchemaVersionError
from exqueue.storage import (
    COMPLETE_MANY,
    MULTI_PROCESS,
    PERSISTENT,
    SCHEDULES,
    SERVER_CLOCK,
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
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, OutOfMemoryError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ConfigurationError(
        f"the Redis backend needs the redis package ({exc}); install it with: "
        f'pip install "exqueue[redis]"'
    ) from exc

from exqueue_redis import _scripts
from exqueue_redis._records import _count, _number, _readable, _record, _text
from exqueue_redis._schedules import RedisSchedules

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py packs commands itself, a little slower
    _hiredis_pack = None

__all__ = ["RedisStorage"]

log = logging.getLogger("exqueue")

SCHEMA_VERSION = b"1"

#: Longest a blocked ``wait_for_jobs`` goes without checking whether the storage closed.
_WAIT_SLICE = 0.2

_TRUTHY = {"1", "true", "yes", "on"}


class RedisStorage(RedisSchedules):
    """Jobs in Redis. ``RedisStorage("redis://127.0.0.1:6379/0", namespace="exqueue")``.

    ``client`` uses an existing ``redis.Redis`` or ``redis.cluster.RedisCluster``
    (the caller keeps ownership: ``close()`` leaves it open). ``cluster=True`` or
    ``?cluster=true`` in the URL connects to a Redis Cluster through that node.
    Commands are not retried by the client: a transition is applied at most once
    per call, and a lost server shows as ``redis.exceptions.ConnectionError``.
    """

    capabilities = frozenset(
        {PERSISTENT, MULTI_PROCESS, WAKEUP, COMPLETE_MANY, SERVER_CLOCK, SCHEDULES}
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
            client = _connect(url, cluster, socket_timeout, connect_timeout)
        elif _decodes_responses(client):
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
        self._check_server()
        self._scripts = {
            name: client.register_script(_scripts.PRELUDE + getattr(_scripts, name))
            for name in (
                "ENQUEUE", "CLAIM", "COMPLETE", "RETRY", "BURY", "RELEASE", "EXTEND",
                "RECOVER", "DELETE", "REQUEUE", "COUNTS", "LIST",
            )
        }  # fmt: skip

    def _check_server(self) -> None:
        """Fail at once with one clear message when Redis does not answer."""
        key = self._prefix + "schema"
        try:
            self._client.ping()
            # Read first and write only into a new namespace: on a Redis at
            # maxmemory a write is refused, yet reading and draining must work.
            version = self._client.get(key)
            if version is None:
                try:
                    self._client.set(key, SCHEMA_VERSION, nx=True)
                    version = self._client.get(key)
                except OutOfMemoryError:
                    version = SCHEMA_VERSION  # nothing stored yet; enqueue will say "full"
        except RedisConnectionError as exc:
            self.close()
            raise ConfigurationError(
                f"cannot reach Redis at {_redact(self._url)}: {exc}; is the server running?"
            ) from None
        except RedisError as exc:
            self.close()
            raise ConfigurationError(f"Redis at {_redact(self._url)} refused: {exc}") from None
        if version != SCHEMA_VERSION:
            self.close()
            raise SchemaVersionError(
                f"Redis namespace {self.namespace!r} has key layout version {version!r}; "
                f"this exqueue uses {SCHEMA_VERSION.decode()}"
            )

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

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        if not jobs:
            return
        args: list[bytes | str | int | float] = [len(jobs)]
        for job in jobs:
            args.extend((
                job.id, job.worker, job.payload, _number(job.run_at, "run_at"),
                _number(job.enqueued_at, "enqueued_at"),
                _count(job.max_attempts, "max_attempts", 1),
            ))  # fmt: skip
        duplicate = self._run("ENQUEUE", *args)
        if duplicate:
            raise ValueError(
                f"duplicate job id {duplicate.decode()!r} in enqueue batch; nothing was enqueued"
            )

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
        rows, damaged = self._run(
            "CLAIM", worker, limit, _number(now, "now"), owner, token,
            _number(lease_until, "lease_until"), "1" if serial else "0",
        )  # fmt: skip
        for job_id, reason in zip(damaged[::2], damaged[1::2], strict=True):
            log.error("job %s is dead: %s", _text(job_id), _text(reason))
        records = []
        for row in rows:
            try:
                records.append(_record(row))
            except (KeyError, ValueError, TypeError, OverflowError) as exc:
                # The script checked every field; should one still not read back,
                # the job dies alone rather than stay "running" unreturned.
                raw_id = dict(zip(row[::2], row[1::2], strict=True)).get(b"id", b"")
                reason = f"damaged stored job: unreadable ({exc!r})"
                if self._run("BURY", raw_id, token, reason):
                    log.error("job %s is dead: %s", _text(raw_id), reason)
        return records

    def complete(self, job_id: str, token: str) -> bool:
        return bool(self._run("COMPLETE", job_id, token))

    def complete_many(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """``complete`` for every ``(job_id, token)`` pair in one script; the ids removed."""
        if not items:
            return []
        args = [part for pair in items for part in pair]
        return [job_id.decode() for job_id in self._run("COMPLETE", *args)]

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
        )
        return [_readable(dict(zip(row[::2], row[1::2], strict=True))) for row in rows]

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

    # -- wake-ups ------------------------------------------------------------

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when a job was made runnable.

        The first wait of a thread subscribes it to ``{ns}:wake``; then the
        thread arms ``{ns}:armed``, and the next transition that makes a job
        runnable (on any node) deletes that key and publishes once. The thread
        stays subscribed. A wait that times out re-arms before it returns; one
        that was woken returns at once and the next wait re-arms and returns
        True without waiting, so a transition made between two waits counts for
        the next one: a loop of waits misses nothing. ``close()`` ends a wait
        early.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        pubsub = self._checkout_pubsub()
        if pubsub is None:
            return False
        broken = False
        try:
            if not getattr(self._local, "listening", False):
                if not self._subscribe(pubsub, deadline):
                    return False
                self._local.listening = True
                self._local.rearm = False
                if not self._arm():
                    return self._poll(pubsub, deadline)
            elif self._local.rearm:
                # The last wait returned before re-arming, so transitions since
                # then announced nothing: arm, and report them as a possible one.
                self._local.rearm = False
                if not self._arm():
                    return self._poll(pubsub, deadline)
                return True
            woke = self._next_wake(pubsub, deadline)
            if woke:
                # One wake-up per burst: what else is queued is the same news.
                while pubsub.get_message(timeout=0) is not None:
                    pass
                # Re-armed by the next wait, not now: the caller claims a round
                # trip sooner.
                self._local.rearm = True
                return True
            if not self._arm():
                self._local.rearm = True
            return False
        except Exception:
            # A broken subscription is thrown away; the next wait starts afresh.
            # After close() the connection may be torn down under us (redis-py
            # then raises ValueError or OSError too): that just ends the wait.
            broken = True
            if self._closed:
                return False
            raise
        finally:
            self._checkin_pubsub(pubsub, broken)

    def _subscribe(self, pubsub: Any, deadline: float) -> bool:
        pubsub.subscribe(self._prefix + "wake")
        while True:
            message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
            if message is None:
                return False
            if message["type"] == "subscribe":
                return True

    def _arm(self) -> bool:
        """Subscribed first, armed second: any later transition publishes to us.

        False on a Redis at maxmemory, which refuses the write: then the caller
        polls (reports a possible job after each wait) until memory is freed.
        """
        try:
            self._client.set(self._prefix + "armed", b"1")
        except OutOfMemoryError:
            return False
        return True

    def _poll(self, pubsub: Any, deadline: float) -> bool:
        """Unarmed (Redis is full): wait out the timeout, then report a possible job."""
        self._next_wake(pubsub, deadline)
        self._local.rearm = True
        return True

    def _next_wake(self, pubsub: Any, deadline: float) -> bool:
        while not self._closed:
            left = deadline - time.monotonic()
            message = pubsub.get_message(timeout=min(max(left, 0.0), _WAIT_SLICE))
            if message is not None and message["type"] == "message":
                return True
            if left <= 0:
                return False
        return False

    def _checkout_pubsub(self) -> Any:
        # One subscription per thread (a PubSub object is not thread-safe), kept
        # between waits. Those in use are closed by their own thread after close().
        with self._pubsubs_lock:
            if self._closed:
                return None
            pubsub = getattr(self._local, "pubsub", None)
            if pubsub is None:
                pubsub = self._local.pubsub = self._client.pubsub()
            self._pubsubs[pubsub] = True
            return pubsub

    def _checkin_pubsub(self, pubsub: Any, broken: bool) -> None:
        with self._pubsubs_lock:
            if not (broken or self._closed):
                self._pubsubs[pubsub] = False
                return
            self._pubsubs.pop(pubsub, None)
            self._local.pubsub = None
            self._local.listening = False
            self._local.rearm = False
        _quietly_close(pubsub)

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
            _quietly_close(pubsub)
        for conn in self._held:
            self._client.connection_pool.release(conn)
        self._held, self._idle = [], []
        if self._owns_client:
            self._client.close()

    def destroy(self) -> None:
        """Delete every key of this namespace (tests, teardown). Jobs are lost."""
        pattern = _glob_escape(self._prefix) + "*"
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                self._client.delete(*batch)
                batch = []
        if batch:
            self._client.delete(*batch)


def _connect(url: str, cluster: bool, socket_timeout: float, connect_timeout: float) -> Any:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    cluster = cluster or any(k == "cluster" and v.lower() in _TRUTHY for k, v in query)
    url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "cluster"])))
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    # No client-side retries: a retried script whose first reply was lost would
    # apply twice (e.g. enqueue, then fail as a duplicate). The pool already
    # replaces connections that the server closed, so a restart causes no error
    # once the server is back.
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


def _decodes_responses(client: Any) -> bool:
    kwargs = getattr(client, "get_connection_kwargs", None)
    return bool(kwargs and kwargs().get("decode_responses"))


def _quietly_close(pubsub: Any) -> None:
    try:
        pubsub.close()
    except (RedisError, OSError):
        pass  # closing a connection that is already broken


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
