"""``queue.run()``: run the workers until SIGINT or SIGTERM, then stop gracefully."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exqueue.queue import Queue

log = logging.getLogger("exqueue")


def run_until_signal(queue: Queue, stop_timeout: float) -> None:
    """Start, block until SIGINT/SIGTERM, then stop gracefully."""
    stop = threading.Event()
    handlers: dict[signal.Signals, Any] = {}

    def request_stop(signum: int, frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, request_stop)
    queue.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        queue.stop(stop_timeout)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
