"""The exqueue adapters: one per backend (memory, SQLite file, PostgreSQL, MariaDB, Redis).

Enqueueing runs in the harness process; jobs run in an ``exqueue worker`` process
started by its own command (``benchmarks.matrix``), as every peer's do. The
memory backend lives in one process, so it has no worker process: it is only in
the enqueue table (``benchmarks.enqueue``), where its idle worker for the latency
figure is ``queue.start()`` threads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any, ClassVar

import exqueue_memory  # noqa: F401
import exqueue_redis  # noqa: F401
import exqueue_sql  # noqa: F401
from benchmarks import common
from benchmarks.exq_app import JOB, make_queue, make_storage
from benchmarks.matrix import Config
from exqueue.job import Call

# Every backend is imported above, when the harness starts, so that all of a run
# uses one version of exqueue even if the checkout changes while it runs.


class ExqueueAdapter(common.Adapter):
    library = "exqueue"
    #: More environment for the worker process.
    extra_env: dict[str, str] = {}
    batch = True
    url: ClassVar[str] = ""

    def __init__(self) -> None:
        self.storage: Any = None
        self.queue: Any = None
        self.worker: common.WorkerProcess | None = None
        self._tmp: str | None = None

    def resolved_url(self) -> str:
        return self.url

    def setup(self) -> None:
        self._open(fresh=True)

    def _open(self, fresh: bool) -> None:
        if self.storage is not None:
            self.storage.close()
        self.storage = make_storage(self.resolved_url())
        if fresh:
            self._wipe()
        self.queue = make_queue(self.storage, 8)

    def _wipe(self) -> None:
        """Empty the store (tables dropped and made again, or the Redis database flushed)."""
        if hasattr(self.storage, "destroy"):
            self.storage.destroy()
            self.storage.close()
            self.storage = make_storage(self.resolved_url())
        elif self.resolved_url().startswith("redis"):
            common.flush_bench_redis()
            self.storage.close()
            self.storage = make_storage(self.resolved_url())

    def clear(self) -> None:
        self._open(fresh=True)

    def enqueue_one(self, n: int) -> None:
        self.queue.enqueue(JOB, n)

    def enqueue_batch(self, ns: Sequence[int]) -> None:
        self.queue.enqueue_many([Call(JOB, (n,), {}) for n in ns])

    def drain(self, concurrency: int) -> int:
        """Run every waiting job in this process with ``concurrency`` threads (profiles only)."""
        return make_queue(self.storage, concurrency).drain(timeout=600)

    def start_worker(self, config: Config, jobs: int) -> None:
        if self.resolved_url().startswith("memory"):
            self.queue.start()
            return
        self.spawn(
            config.argv,
            env={**config.env(jobs), "EXQ_BENCH_URL": self.resolved_url(), **self.extra_env},
            stop_signal=config.library.stop_signal,
        )

    def stop_worker(self) -> None:
        if self.worker is None:
            self.queue.stop(timeout=10)
            return
        self.worker.stop()
        self.worker = None

    def teardown(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None
        if self._tmp:
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.unlink(self._tmp + suffix)
                except FileNotFoundError:
                    pass
            self._tmp = None


class Memory(ExqueueAdapter):
    backend = "memory"
    url = "memory://"
    notes = "in-process; idle worker = queue.start() threads"


class SQLite(ExqueueAdapter):
    backend = "sqlite"
    notes = "file database; no wake-up signal: idle workers poll (20 ms .. 1 s)"

    def resolved_url(self) -> str:
        if self._tmp is None:
            fd, self._tmp = tempfile.mkstemp(prefix="exqbench-", suffix=".db")
            os.close(fd)
            os.unlink(self._tmp)
        return f"sqlite:///{self._tmp}"


class Postgres(ExqueueAdapter):
    backend = "postgres"
    url = common.PG_URL
    notes = "LISTEN/NOTIFY wake-up"


class MariaDB(ExqueueAdapter):
    backend = "mariadb"
    url = common.MYSQL_URL
    notes = "no wake-up signal: idle workers poll (20 ms .. 1 s)"


class Redis(ExqueueAdapter):
    backend = "redis"
    url = common.REDIS_URL
    notes = "pub/sub wake-up"


class RedisAsync(Redis):
    """The job as an ``async def`` worker type: coroutines on the worker's event loop."""

    backend = "redis-asyncio"
    extra_env = {"EXQ_BENCH_ASYNC": "1"}


class PostgresAsync(Postgres):
    backend = "postgres-asyncio"
    extra_env = {"EXQ_BENCH_ASYNC": "1"}


ADAPTERS: list[type[ExqueueAdapter]] = [
    Memory,
    SQLite,
    Postgres,
    MariaDB,
    Redis,
    RedisAsync,
    PostgresAsync,
]
