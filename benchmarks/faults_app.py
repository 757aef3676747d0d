"""The application the fault tests run in real worker processes.

``python -m exqueue worker --app benchmarks.faults_app:queue`` (with the repository on
``PYTHONPATH``) runs it. Everything about it comes from the environment, so one
module serves every backend and scenario:

- ``FAULT_BACKEND`` (sqlite, postgres, mysql, redis), ``FAULT_URL`` and
  ``FAULT_PREFIX`` (the SQL table prefix or the Redis namespace) pick the storage;
- ``FAULT_NODE``, ``FAULT_LEASE``, ``FAULT_CONCURRENCY``, ``FAULT_MAX_RETRIES``
  configure the queue and its one worker type, ``faults.job``;
- ``FAULT_OUT`` is the record file every job appends to, ``FAULT_FSYNC=0``
  skips the fsync (the load test: a process crash keeps the page cache anyway),
  ``FAULT_STARTS=1`` also records when an attempt starts.

A record line is ``<event> <pid> <n> <attempt>``, written with one O_APPEND
``write`` so that lines from concurrent processes never interleave.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import exqueue
from exqueue.storage import Storage

WORKER = "faults.job"
OUT = os.environ.get("FAULT_OUT", "")
FSYNC = os.environ.get("FAULT_FSYNC", "1") == "1"
STARTS = os.environ.get("FAULT_STARTS", "0") == "1"


def open_storage(backend: str, url: str, prefix: str) -> Storage:
    """The storage a fault run uses; the test process opens the same one."""
    if backend == "sqlite":
        from exqueue_sql import SQLStorage

        return SQLStorage(url)
    if backend in ("postgres", "mysql"):
        from exqueue_sql import SQLStorage

        return SQLStorage(url, prefix=prefix)
    if backend == "redis":
        from exqueue_redis import RedisStorage

        # A short socket timeout so that a stopped server shows up as an error
        # the runtime retries, instead of a call that hangs.
        return RedisStorage(url, namespace=prefix, socket_timeout=5.0, connect_timeout=2.0)
    raise ValueError(f"unknown fault backend {backend!r}")


def record(event: str, n: int, attempt: int) -> None:
    line = f"{event} {os.getpid()} {n} {attempt}\n".encode()
    fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        if FSYNC:
            os.fsync(fd)
    finally:
        os.close(fd)


def run_job(
    n: int,
    sleep: float = 0.0,
    fail_until: int = 0,
    kill_until: int = 0,
    sleeps: list[float] | None = None,
) -> None:
    """Job ``n``. Attempts up to ``kill_until`` SIGKILL their own process, attempts up
    to ``fail_until`` raise; ``sleeps[attempt - 1]`` (else ``sleep``) is how long it works."""
    context = exqueue.current_job()
    attempt = context.attempt if context else 0
    if attempt <= kill_until:
        record("kill", n, attempt)
        os.kill(os.getpid(), signal.SIGKILL)
    if STARTS:
        record("start", n, attempt)
    pause = sleeps[attempt - 1] if sleeps and attempt <= len(sleeps) else sleep
    if pause:
        time.sleep(pause)
    if attempt <= fail_until:
        record("fail", n, attempt)
        raise RuntimeError(f"planned failure of job {n} on attempt {attempt} in pid {os.getpid()}")
    record("done", n, attempt)


def build_queue() -> exqueue.Queue:
    storage = open_storage(
        os.environ["FAULT_BACKEND"], os.environ["FAULT_URL"], os.environ.get("FAULT_PREFIX", "")
    )
    q = exqueue.Queue(
        storage,
        node=os.environ.get("FAULT_NODE") or None,
        lease=float(os.environ.get("FAULT_LEASE", "5")),
        poll_interval=0.1,
    )
    q.worker(
        name=WORKER,
        concurrency=int(os.environ.get("FAULT_CONCURRENCY", "4")),
        max_retries=int(os.environ.get("FAULT_MAX_RETRIES", "2")),
        backoff=exqueue.Fixed(0),
    )(run_job)

    @q.on_dead
    def reported(job: exqueue.Job, exc: Any) -> None:
        # "dead <pid> <job id> <attempt>": the test checks each death is reported once.
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"dead {os.getpid()} {job.id} {job.attempt}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    return q


queue = build_queue() if "FAULT_BACKEND" in os.environ else None
