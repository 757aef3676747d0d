"""Checked by mypy (from tests/core/test_typing.py), never imported by pytest: ``@queue.worker``
keeps the decorated function's signature on ``enqueue``, ``call`` and ``__call__``, and on
the options form ``fn.options(...).enqueue`` / ``.call``."""

from __future__ import annotations

import datetime as dt

from exqueue import JobId, Queue, Uniqueness

queue = Queue("memory://")


@queue.worker
def send(to: str, *, retries: int = 0) -> bool:
    return bool(to) and retries >= 0


@queue.worker(concurrency=2, name="typing.resize", priority=1, unique=Uniqueness(args=["path"]))
def resize(path: str, width: int) -> None:
    del path, width


ok: bool = send("a@b.c", retries=1)
send.enqueue("a@b.c")
send.enqueue_in(5.0, "a@b.c", retries=2)
send.enqueue_at(dt.datetime.now(), "a@b.c")
send.call("a@b.c")
resize("x.png", 10)
resize.enqueue("x.png", width=10)
resize.call("x.png", 10)
job_id: JobId = send.options(priority=1, unique=True, meta={"a": "b"}).enqueue("a@b.c")
duplicate: bool = job_id.duplicate
plain: str = resize.options(timeout=5).options(expires_in=60).enqueue("x.png", 10)
queue.enqueue_many([resize.options(unique="k").call("x.png", width=3)])

# Each line below must be rejected; warn_unused_ignores turns a missed rejection
# into an error, so the test fails if the signature were lost again.
send.enqueue(42)  # type: ignore[arg-type]
send.call("a@b.c", retries="x")  # type: ignore[arg-type]
resize("x.png")  # type: ignore[call-arg]
resize.enqueue("x.png", height=3)  # type: ignore[call-arg]
send.options(priority=2).enqueue(42)  # type: ignore[arg-type]
