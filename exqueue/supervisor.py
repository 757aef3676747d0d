"""``exqueue worker --processes N``: run and supervise N worker processes.

Each child is ``exqueue worker --app APP --node BASE-i``. A child that dies is
started again under the same node name, so it reclaims its own jobs at once
instead of waiting for their leases to expire. A child that keeps failing right
after its start (an app that cannot import, a store that refuses it) is not
restarted forever: after ``GIVE_UP_AFTER`` such failures in a row the supervisor
stops the others and exits with status 1, repeating the child's last error.
SIGTERM or SIGINT is passed on to every child, which stops gracefully; the
supervisor waits for them all. A second one (``REPEAT_WINDOW`` or more after
the first) is passed on too, so every child stops at once, releasing its
running jobs (see :mod:`exqueue.runtime.signals`).

A child may recycle itself (``--max-jobs`` / ``--max-memory``, see
:class:`Recycler`): it stops gracefully, finishing or releasing its jobs, and
exits with ``RECYCLE_STATUS``; the supervisor starts a fresh one at once.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from exqueue.runtime.signals import REPEAT_WINDOW
from exqueue.storage import PERSISTENT

if TYPE_CHECKING:
    from exqueue.queue import Queue

log = logging.getLogger("exqueue")

#: A child that dies sooner than this after its start failed "immediately".
MIN_UPTIME = 5.0
#: Immediate failures in a row after which the supervisor gives up.
GIVE_UP_AFTER = 5
#: Exit status of a child that stopped to be replaced (EX_TEMPFAIL): not a failure.
RECYCLE_STATUS = 75


class _Child:
    """One worker process; its stderr is passed through, its last lines kept."""

    def __init__(self, app: str, node: str, stop_timeout: float, extra: list[str]) -> None:
        command = [sys.executable, "-m", "exqueue", "worker", "--app", app, "--node", node]
        # Explicit, so a child never picks a process count of its own (and supervises).
        command += ["--processes", "1"]
        command += ["--stop-timeout", str(stop_timeout), *extra]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE)
        self.last_lines: collections.deque[str] = collections.deque(maxlen=5)
        assert self.process.stderr is not None
        self._relay = threading.Thread(
            target=self._pass_on, args=(self.process.stderr,), name=f"exqueue-{node}-stderr"
        )
        self._relay.daemon = True
        self._relay.start()

    def _pass_on(self, stream: IO[bytes]) -> None:
        for line in stream:
            # Keep reading whatever happens to our own stderr: a child blocked
            # on a full pipe would stop working.
            try:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()
            except (OSError, ValueError, AttributeError):
                pass
            text = line.decode(errors="replace").rstrip()
            if text:
                self.last_lines.append(text)

    def last_error(self) -> str:
        self._relay.join(timeout=2.0)  # the rest of what it wrote before exiting
        return self.last_lines[-1] if self.last_lines else "(it printed nothing)"


def supervise(app: str, processes: int, base: str, stop_timeout: float, extra: list[str]) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status for the supervisor."""
    stopping = threading.Event()
    first_at: list[float] = []
    children: dict[str, _Child] = {}
    signalled: set[int] = set()  # pids of children already sent the first SIGTERM

    def pass_on() -> None:
        for child in list(children.values()):
            if child.process.poll() is None:
                signalled.add(child.process.pid)
                child.process.send_signal(signal.SIGTERM)

    def request_stop(signum: int, frame: object) -> None:
        # Passed on at once, so a child's "second signal" clock starts with ours.
        if not first_at:
            first_at.append(time.monotonic())
            stopping.set()
            pass_on()
        elif time.monotonic() - first_at[0] >= REPEAT_WINDOW:
            # A second request: each child then releases its running jobs and exits.
            log.warning("received signal %d again: telling the workers to stop now", signum)
            pass_on()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    nodes = [f"{base}-{number}" for number in range(processes)]
    for node in nodes:
        children[node] = _Child(app, node, stop_timeout, extra)
    failures = dict.fromkeys(nodes, 0)  # immediate failures in a row, per node
    restart_at: dict[str, float] = {}
    gave_up = False
    log.info("supervising %d worker processes: %s", processes, ", ".join(nodes))
    while not gave_up and not stopping.wait(0.2):
        now = time.monotonic()
        for node, child in list(children.items()):
            if node in restart_at:
                if now >= restart_at[node]:
                    del restart_at[node]
                    children[node] = _Child(app, node, stop_timeout, extra)
                continue
            status = child.process.poll()
            if status is None:
                continue
            if status == RECYCLE_STATUS:
                log.info("worker %s recycled itself; starting a fresh one", node)
                failures[node] = 0
                children[node] = _Child(app, node, stop_timeout, extra)
                continue
            if now - child.started >= MIN_UPTIME:
                failures[node] = 0
            failures[node] += 1
            if failures[node] >= GIVE_UP_AFTER:
                message = (
                    f"worker {node} failed {failures[node]} times in a row within "
                    f"{MIN_UPTIME:g}s of starting (last exit status {status}); giving up. "
                    f"Its last error: {child.last_error()}"
                )
                log.error("%s", message)
                print(f"exqueue: error: {message}", file=sys.stderr, flush=True)
                gave_up = True
                break
            pause = min(0.5 * 2 ** (failures[node] - 1), MIN_UPTIME)
            log.warning(
                "worker %s exited with status %s; restarting it in %.1fs", node, status, pause
            )
            restart_at[node] = now + pause
    running = [c for node, c in children.items() if node not in restart_at]
    for child in running:
        if child.process.poll() is None and child.process.pid not in signalled:
            child.process.send_signal(signal.SIGTERM)
    status = 1 if gave_up else 0
    for child in running:
        try:
            child.process.wait(timeout=stop_timeout + 10)
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop in time; killing it", child.process.pid)
            child.process.kill()
            child.process.wait()
            status = 1
    return status


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS tells)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not on Linux
        return max(os.cpu_count() or 1, 1)


def default_processes(queue: Queue, cpus: int | None = None) -> tuple[int, str]:
    """How many worker processes ``exqueue worker`` runs without ``--processes``, and why.

    One process runs Python code on one CPU at a time (the GIL): a job body that
    computes (``cpu_bound=True``) gains nothing from more threads, only from more
    processes, so such an app gets one process per usable CPU. Bodies that wait
    (I/O, sleeps) overlap under one process's threads, and each extra process costs
    its own connections, heartbeat and claims, so every other app gets one. An
    in-process store (the memory backend) cannot be shared by processes: one.
    """
    heavy = sorted(name for name, worker in queue.workers.items() if worker.cpu_bound)
    if not heavy:
        return 1, "no worker type is declared cpu_bound=True"
    if PERSISTENT not in queue.storage.capabilities:
        return 1, f"{type(queue.storage).__name__} lives in one process"
    cpus = usable_cpus() if cpus is None else cpus
    return cpus, f"one per usable CPU ({cpus}), for cpu_bound worker types {', '.join(heavy)}"


#: Job threads abandoned past their timeout after which a worker process is replaced.
MAX_ABANDONED = 4


class Recycler:
    """Stops this worker process gracefully once it has run ``max_jobs`` jobs or its
    resident memory passed ``max_memory_mb``, then tells its caller to exit with
    ``RECYCLE_STATUS`` (under ``--processes`` the supervisor starts a fresh child).

    The stop is a SIGTERM to the process itself, so it is the same graceful stop
    an operator's SIGTERM gives: running jobs finish within the stop timeout,
    the rest are released with their attempt uncounted.
    """

    def __init__(self, max_jobs: int | None, max_memory_mb: int | None) -> None:
        self.max_jobs = max_jobs
        self.max_memory_mb = max_memory_mb
        self.reason: str | None = None
        self._default_handler: Any = None
        self._done = 0
        self._lock = threading.Lock()

    def watch(self, workers: dict[str, Any]) -> None:
        """Count the job bodies of every worker type; poll memory in a thread."""
        if self.max_jobs is not None:
            for worker in workers.values():
                worker.fn = self._counted(worker.fn)
        if self.max_memory_mb is not None:
            self._default_handler = signal.getsignal(signal.SIGTERM)
            thread = threading.Thread(target=self._watch_memory, name="exqueue-recycler")
            thread.daemon = True
            thread.start()

    def _counted(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self._count()

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self._count()

        return run

    def abandoned(self, count: int) -> None:
        """Job threads stuck past their timeout hold memory and sockets: past
        ``MAX_ABANDONED`` the process is replaced (they cannot be killed otherwise)."""
        if count >= MAX_ABANDONED:
            self._recycle(f"abandoned {count} job threads stuck past their timeout")

    def _count(self) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        if self.max_jobs is not None and done == self.max_jobs:
            self._recycle(f"ran {done} jobs (--max-jobs {self.max_jobs})")

    def _watch_memory(self) -> None:
        assert self.max_memory_mb is not None
        # Not before the worker's graceful-stop handler is in place: until then
        # a SIGTERM would end the process at once.
        while signal.getsignal(signal.SIGTERM) is self._default_handler:
            time.sleep(0.1)
        while self.reason is None:
            time.sleep(1.0)
            used = resident_mb()
            if used > self.max_memory_mb:
                self._recycle(f"uses {used:.0f} MB (--max-memory {self.max_memory_mb})")
                return

    def _recycle(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        log.warning("worker %d %s; stopping gracefully to be replaced", os.getpid(), reason)
        os.kill(os.getpid(), signal.SIGTERM)


def resident_mb() -> float:
    """This process's resident memory now (Linux), else its peak, in MiB."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
