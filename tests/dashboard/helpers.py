"""A store with a bit of everything for the dashboard tests, hostile text included,
and a real HTTP server (uvicorn in a thread) for the browser tests."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import exqueue
from exqueue.storage import (
    HistoryCount,
    NodeInfo,
    SupportsHistory,
    SupportsNodes,
    SupportsSchedules,
)

#: Stored strings that must come out of every page as text.
SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '"><img src=x onerror="window.__pwned = 2">'
HOSTILE = (SCRIPT, IMG)
FAILING = "mail.send"
FINE = "report.build"


@dataclass
class Filled:
    queue: exqueue.Queue
    dead: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)


def fill(queue: exqueue.Queue, *, dead: int = 3, waiting: int = 2) -> Filled:
    """``dead`` dead jobs of FAILING (hostile arguments, meta and errors), ``waiting``
    waiting jobs of FINE, one scheduled job, a live node, history and a schedule."""

    @queue.worker(name=FAILING, max_retries=0)
    def send(to: str, note: str = "") -> None:
        raise RuntimeError(f"cannot send {SCRIPT} to {to}")

    @queue.worker(name=FINE)
    def build(n: int) -> int:
        return n

    filled = Filled(queue)
    tagged = send.options(meta={"team": SCRIPT, "src": IMG, "batch": "b1"})
    filled.dead = [tagged.enqueue(f"{IMG} {n}", note=SCRIPT) for n in range(dead)]
    queue.drain(timeout=30)
    filled.waiting = [build.enqueue(n) for n in range(waiting)]
    filled.scheduled = [build.enqueue_in(3600, 99)]
    storage = queue.storage
    now = time.time()
    if isinstance(storage, SupportsNodes):
        storage.beat_node(NodeInfo(f"node {SCRIPT}", IMG, 4242, now - 60, now, {FINE: 3}, 1))
    if isinstance(storage, SupportsHistory):
        minute = int(now // 60) * 60
        storage.add_history([HistoryCount(FINE, minute, 7, 2, 1, 0.5)])
    if isinstance(storage, SupportsSchedules):
        storage.pause_schedule(f"nightly {SCRIPT}", False)
    return filled


def form_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1)


class Served:
    """The app served by uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@contextmanager
def served(app: Any) -> Iterator[Served]:
    server = Served(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()
