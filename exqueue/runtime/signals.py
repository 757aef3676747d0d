"""``queue.run()``: run the workers until SIGINT or SIGTERM, then stop gracefully.

The first signal starts a graceful stop: running jobs get the stop timeout to
finish. A second one, a moment later, stops at once: running jobs are released
(their attempt not counted) and the process goes on to exit. Signals within
``REPEAT_WINDOW`` of the first count as the same request: a terminal's Ctrl-C
reaches a supervisor and its children together, and the supervisor then
passes a SIGTERM on to each child.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exqueue.runtime.core import Runtime

log = logging.getLogger("exqueue")

#: Seconds after the first signal during which another one is the same request.
REPEAT_WINDOW = 1.0


def run_until_signal(
    start: Callable[[], Runtime], stop: Callable[[float], None], stop_timeout: float
) -> None:
    """Call ``start``, block until SIGINT/SIGTERM, then ``stop(stop_timeout)``.

    A second signal during the stop hurries it (``Runtime.hurry``).
    """
    stopped = threading.Event()
    first_at: list[float] = []
    runtime: list[Runtime] = []
    handlers: dict[signal.Signals, Any] = {}

    def request_stop(signum: int, frame: object) -> None:
        if not first_at:
            first_at.append(time.monotonic())
            log.info("received signal %d, stopping (send it again to stop at once)", signum)
            stopped.set()
        elif time.monotonic() - first_at[0] >= REPEAT_WINDOW:
            log.warning("received signal %d again: releasing running jobs, stopping now", signum)
            for started in runtime:
                started.hurry()

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, request_stop)
    runtime.append(start())
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        stop(stop_timeout)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
