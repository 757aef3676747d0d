"""Fault scenarios on real worker processes: crashes, lost nodes, outages, poison jobs.

Each scenario function runs ``python -m exqueue worker --app benchmarks.faults_app:queue``
processes over one storage, does something unkind to them or to the storage
server, checks what must hold (raising ``AssertionError`` with the evidence when
it does not) and returns a :class:`Result` for the reliability table.

``tests/faults/test_faults.py`` runs them at moderate sizes under pytest;
``benchmarks/reliability.py`` runs them at full size and writes
``docs/reliability.md``. Both count a job's runs from the record file its job
code appends to, never from the storage alone, since the storage forgets a
job once it succeeds.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import exqueue
from benchmarks import services
from benchmarks.faults_app import WORKER, open_storage
from exqueue.storage import DEAD, RUNNING, WAITING, WORKER_LOST, JobRecord, NewJob, Storage

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("sqlite", "postgres", "mysql", "redis")
#: The Python module each backend needs; a backend whose module does not import yet is skipped.
MODULES = {"sqlite": "exqueue_sql", "postgres": "exqueue_sql", "mysql": "exqueue_sql",
           "redis": "exqueue_redis"}  # fmt: skip
ALWAYS = 1_000_000  # ``fail_until``/``kill_until`` for "on every attempt"


# -- where the jobs live ---------------------------------------------------------------


@dataclass
class Target:
    """One isolated storage location of one backend, shared by the test and its workers."""

    backend: str
    url: str
    prefix: str
    workdir: Path

    def open(self) -> Storage:
        return open_storage(self.backend, self.url, self.prefix)

    def env(self) -> dict[str, str]:
        return {"FAULT_BACKEND": self.backend, "FAULT_URL": self.url, "FAULT_PREFIX": self.prefix}

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            storage = self.open()
            try:
                storage.destroy()  # type: ignore[attr-defined]
            finally:
                storage.close()


def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run here (module missing, server down), or None."""
    try:
        importlib.import_module(MODULES[backend])
    except ImportError as exc:
        return f"{MODULES[backend]} does not import yet ({exc})"
    if backend == "sqlite":
        return None
    if not services.answers(backend):
        return f"{backend} is not reachable at {services.SERVERS[backend][0]}"
    return None


def make_target(backend: str, workdir: Path, url: str | None = None) -> Target:
    workdir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    if backend == "sqlite":
        return Target(backend, url or f"sqlite:///{workdir / 'jobs.db'}", "", workdir)
    return Target(backend, url or services.SERVERS[backend][0], f"flt{tag}_", workdir)


# -- results ---------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the reliability table."""

    scenario: str
    backend: str
    jobs: int
    lost: int
    duplicates: int
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class Rec:
    """One line of the record file: ``<event> <pid> <n> <attempt>``."""

    event: str
    pid: int
    n: str
    attempt: int


# -- one scenario's processes, records and storage ----------------------------------------


@dataclass
class Run:
    """Worker processes over one target, the record file they write, and a producer."""

    target: Target
    max_retries: int = 2
    lease: float = 5.0
    concurrency: int = 4
    fsync: bool = True
    starts: bool = False
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.out = self.target.workdir / f"records-{tag}.txt"
        self.logdir = self.target.workdir / f"logs-{tag}"
        self.logdir.mkdir()
        self.storage = self.target.open()
        self.queue = exqueue.Queue(self.storage, lease=self.lease)
        # The producer registers the type only to store the right max_attempts.
        self.queue.worker(name=WORKER, max_retries=self.max_retries)(lambda *a, **k: None)
        self.logs: dict[int, Path] = {}

    # processes

    def spawn(
        self,
        node: str | None = None,
        *,
        lease: float | None = None,
        concurrency: int | None = None,
        stop_timeout: float = 30.0,
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(self.target.env())
        env.update(
            FAULT_OUT=str(self.out),
            FAULT_NODE=node or "",
            FAULT_LEASE=str(lease or self.lease),
            FAULT_CONCURRENCY=str(concurrency or self.concurrency),
            FAULT_MAX_RETRIES=str(self.max_retries),
            FAULT_FSYNC="1" if self.fsync else "0",
            FAULT_STARTS="1" if self.starts else "0",
            PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
        )
        cmd = [sys.executable, "-m", "exqueue", "worker", "--app", "benchmarks.faults_app:queue",
               "--stop-timeout", str(stop_timeout)]  # fmt: skip
        log = self.logdir / f"worker-{len(self.procs)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def terminate(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop) and the exit status."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
        with contextlib.suppress(Exception):
            self.storage.close()

    # jobs

    def enqueue(self, count: int, start: int = 0, **kwargs: Any) -> dict[str, str]:
        """Enqueue jobs ``start .. start+count-1``; returns job id -> n."""
        ids: dict[str, str] = {}
        for low in range(start, start + count, 1000):
            numbers = range(low, min(low + 1000, start + count))
            calls = [exqueue.Call(WORKER, (n,), dict(kwargs)) for n in numbers]
            for job_id, n in zip(self.queue.enqueue_many(calls), numbers, strict=True):
                ids[job_id] = str(n)
        return ids

    def records(self) -> list[Rec]:
        if not self.out.exists():
            return []
        found = []
        for line in self.out.read_text().splitlines():
            event, pid, n, attempt = line.split()
            found.append(Rec(event, int(pid), n, int(attempt)))
        return found

    def done(self) -> Counter[str]:
        return Counter(r.n for r in self.records() if r.event == "done")

    def running(self, owner: str | None = None) -> list[JobRecord]:
        jobs = self.storage.list_jobs(state=RUNNING, limit=100_000)
        return [j for j in jobs if owner is None or j.lease_owner == owner]

    def remaining(self) -> list[JobRecord]:
        return self.storage.list_jobs(limit=100_000)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll until ``predicate()``; returns the moment (monotonic) it held."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
            time.sleep(0.05)

    def wait_settled(self, timeout: float, dead: int = 0) -> float:
        """Until nothing is waiting or running and exactly ``dead`` jobs are dead."""

        def settled() -> bool:
            counts = self.storage.counts(time.time()).get(WORKER)
            if counts is None:
                return dead == 0
            return (counts.waiting, counts.scheduled, counts.running, counts.dead) == (
                0, 0, 0, dead,
            )  # fmt: skip

        return self.wait(settled, timeout, f"the queue settled with {dead} dead jobs")

    def finish(
        self, procs: list[subprocess.Popen[bytes]], expected: set[str], rerun: set[str]
    ) -> tuple[int, set[str]]:
        """Stop ``procs`` gracefully and check the end: every ``expected`` job ran, only
        jobs in ``rerun`` (running when their node died) ran twice, nothing is left."""
        for proc in procs:
            assert self.terminate(proc) == 0, self.log(proc)
        lost, dups = tally(expected, self.done())
        assert lost == 0, f"{lost} jobs never ran"
        assert dups <= rerun, f"jobs {sorted(dups - rerun)} ran twice but were not running"
        assert self.remaining() == []
        return lost, dups


@contextlib.contextmanager
def running(target: Target, **options: Any) -> Iterator[Run]:
    run = Run(target, **options)
    try:
        yield run
    finally:
        run.close()


def tally(expected: set[str], done: Counter[str]) -> tuple[int, set[str]]:
    """(how many expected jobs never completed, the jobs that completed more than once)."""
    lost = len(expected - set(done))
    return lost, {n for n, count in done.items() if count > 1}


# -- 1. crash: SIGKILL at random moments ---------------------------------------------------


def crash(target: Target, jobs: int = 2000, kills: int = 3, seed: int | None = None) -> Result:
    """One worker SIGKILLed at ``kills`` random moments and restarted under its stable name."""
    rng = random.Random(seed)
    node = f"crash-{uuid.uuid4().hex[:6]}"
    with running(target, lease=2.0, concurrency=4) as run:
        ids = run.enqueue(jobs, sleep=0.005)
        thresholds = sorted(rng.sample(range(jobs // 10, jobs * 9 // 10), kills))
        started = time.monotonic()
        at_kill: set[str] = set()
        for threshold in thresholds:
            proc = run.spawn(node)
            run.wait(lambda t=threshold: run.done().total() >= t, 300, f"{threshold} jobs ran")
            run.kill(proc)
            at_kill |= {ids[j.id] for j in run.running(owner=node)}
        last = run.spawn(node)
        run.wait_settled(600)
        seconds = time.monotonic() - started
        lost, dups = run.finish([last], set(ids.values()), rerun=at_kill)
    return Result("crash (3 × SIGKILL)", target.backend, jobs, lost, len(dups), seconds,
                  f"{len(at_kill)} jobs running at the kills")  # fmt: skip


# -- 2. node loss: the survivor recovers after the lease; a stable name reclaims at once -----


def node_loss(target: Target, jobs: int = 60, lease: float = 1.5) -> Result:
    """Two nodes; one SIGKILLed; the other recovers its jobs once the lease expires."""
    a, b = (f"{x}-{uuid.uuid4().hex[:6]}" for x in "ab")
    with running(target, lease=lease, concurrency=2, starts=True) as run:
        ids = run.enqueue(jobs, sleep=0.3)
        started = time.monotonic()
        proc_a, proc_b = run.spawn(a), run.spawn(b)
        run.wait(lambda: run.running(a) and run.running(b), 60, "both nodes run jobs")
        run.kill(proc_a)
        killed = time.monotonic()
        held = {ids[j.id] for j in run.running(a)}
        assert held, "the killed node held no job"

        def recovered() -> bool:
            return not any(ids[j.id] in held for j in run.running(a))

        taken = run.wait(recovered, 60, "the survivor recovered the lost node's jobs")

        def rerun_by_b() -> bool:
            return held <= {r.n for r in run.records() if r.event == "done" and r.pid == proc_b.pid}

        run.wait(rerun_by_b, 120, "the survivor ran the lost node's jobs")
        run.wait_settled(120)
        seconds = time.monotonic() - started
        # The lease was last extended at most lease/3 before the kill.
        assert taken - killed >= lease * 2 / 3 - 0.2, (
            f"jobs of the lost node were recovered {taken - killed:.2f}s after the kill, "
            f"before their {lease}s lease could have expired"
        )
        assert taken - killed <= lease * 2 + 5, f"recovery took {taken - killed:.1f}s"
        lost, dups = run.finish([proc_b], set(ids.values()), rerun=held)
    return Result("node loss (survivor)", target.backend, jobs, lost, len(dups), seconds,
                  f"{len(held)} jobs recovered {taken - killed:.1f}s after the kill "
                  f"(lease {lease:g}s)")  # fmt: skip


def stable_reclaim(target: Target, jobs: int = 20, lease: float = 60.0) -> Result:
    """A node SIGKILLed and restarted under its stable name reclaims its jobs at once."""
    node = f"stable-{uuid.uuid4().hex[:6]}"
    with running(target, lease=lease, concurrency=2, starts=True) as run:
        ids = run.enqueue(jobs, sleep=0.3)
        started = time.monotonic()
        first = run.spawn(node)
        run.wait(lambda: sum(r.event == "start" for r in run.records()) >= 2, 60,
                 "the node runs two jobs")  # fmt: skip
        run.kill(first)
        killed = time.monotonic()
        held = {ids[j.id] for j in run.running(node)}
        second = run.spawn(node)

        def rerun() -> bool:
            return held <= {r.n for r in run.records() if r.event == "done" and r.pid == second.pid}

        taken = run.wait(rerun, lease / 2, "the restarted node re-ran its own jobs")
        run.wait_settled(120)
        seconds = time.monotonic() - started
        lost, dups = run.finish([second], set(ids.values()), rerun=held)
    return Result("node loss (stable name)", target.backend, jobs, lost, len(dups), seconds,
                  f"{len(held)} jobs re-run {taken - killed:.1f}s after the kill, "
                  f"lease {lease:g}s")  # fmt: skip


# -- 3. stale worker: SIGSTOP past the lease, SIGCONT while another node holds the job -------


def stale_worker(target: Target, lease: float = 1.0) -> Result:
    """A paused holder's late success and late failure are both rejected."""
    one, two = (f"stale{x}-{uuid.uuid4().hex[:6]}" for x in "12")
    with running(target, lease=lease, concurrency=2, starts=True, max_retries=1) as run:
        # Attempt 1 (the paused node) works 2 s, attempt 2 (the new node) 4 s.
        ok_ids = run.enqueue(1, start=1, sleeps=[2.0, 4.0])
        fail_ids = run.enqueue(1, start=2, sleeps=[2.0, 4.0], fail_until=ALWAYS)
        ok_id, fail_id = next(iter(ok_ids)), next(iter(fail_ids))
        started = time.monotonic()
        p1 = run.spawn(one)

        def starts(pid: int, attempt: int) -> set[str]:
            return {r.n for r in run.records()
                    if r.event == "start" and r.pid == pid and r.attempt == attempt}  # fmt: skip

        run.wait(lambda: starts(p1.pid, 1) == {"1", "2"}, 60, "the first node started both jobs")
        p1.send_signal(signal.SIGSTOP)
        p2 = run.spawn(two)
        run.wait(lambda: starts(p2.pid, 2) == {"1", "2"}, 60, "the second node took both jobs")

        def snapshot() -> dict[str, Any]:
            # Everything but lease_expires, which the new holder's heartbeat moves on.
            found = {job_id: run.storage.get(job_id) for job_id in (ok_id, fail_id)}
            return {job_id: (r.state, r.attempt, r.errors, r.run_at, r.lease_owner, r.lease_token)
                    for job_id, r in found.items() if r is not None}  # fmt: skip

        before = snapshot()
        for record in (run.storage.get(ok_id), run.storage.get(fail_id)):
            assert record is not None and record.state == RUNNING and record.lease_owner == two
            assert record.attempt == 2 and record.errors == (WORKER_LOST,), record
        p1.send_signal(signal.SIGCONT)
        # The paused node wakes up, finishes both attempts and tries to record them.
        run.wait(lambda: "lease on job" in run.log(p1) and run.log(p1).count("was lost") >= 2,
                 30, "the paused node tried to record its late outcomes")  # fmt: skip
        after = snapshot()
        assert after == before, f"a stale holder changed a job:\n{before}\n{after}"
        run.wait_settled(60, dead=1)
        seconds = time.monotonic() - started
        records = run.records()
        assert run.storage.get(ok_id) is None
        dead = run.storage.get(fail_id)
        assert dead is not None and dead.state == DEAD and dead.attempt == 2
        assert len(dead.errors) == 2 and dead.errors[0] == WORKER_LOST
        assert f"in pid {p2.pid}" in dead.errors[1] and f"pid {p1.pid}" not in "".join(dead.errors)
        # The reporter runs just after the job is buried: wait for its record.
        run.wait(lambda: any(r.event == "dead" for r in run.records()), 10, "the death reported")
        records = run.records()
        reports = [r for r in records if r.event == "dead"]
        assert [(r.pid, r.n) for r in reports] == [(p2.pid, fail_id)], reports
        assert Rec("done", p2.pid, "1", 2) in records
        for proc in (p1, p2):
            assert run.terminate(proc) == 0, run.log(proc)
        lost = 0 if run.remaining() == [dead] else 1
    return Result(
        "stale worker (SIGSTOP)",
        target.backend,
        2,
        lost,
        0,
        seconds,
        "late success and late failure rejected; the new run's outcome stands",
    )


# -- 4. outage: the storage server goes away mid-drain -----------------------------------


class Outage:
    """Makes a target's storage unavailable for a while, then brings it back."""

    name = "outage"

    def __init__(self, target: Target) -> None:
        self.target = target

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come back within {timeout:.0f}s")
        time.sleep(0.2)


def _quiet(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


class PostgresOutage(Outage):
    name = "PostgreSQL stopped"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.version = sorted(os.listdir("/etc/postgresql"))[-1]

    def _ctl(self, action: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, "main",
                        action], check=True, capture_output=True, timeout=120)  # fmt: skip

    def stop(self) -> None:
        self._ctl("stop")

    def start(self) -> None:
        self._ctl("start")
        _until(lambda: _quiet("pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"), 60,
               "PostgreSQL")  # fmt: skip


class MariaDBOutage(Outage):
    name = "MariaDB stopped"

    def _ping(self) -> bool:
        return _quiet("mariadb-admin", "-uroot", "-h127.0.0.1", "ping")

    def _gone(self) -> bool:
        return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode != 0

    def stop(self) -> None:
        subprocess.run(["mariadb-admin", "-uroot", "-h127.0.0.1", "shutdown"], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        # The server stops answering before its process exits; a start issued in
        # between is a no-op (--oknodo), so wait for the process itself to go.
        _until(self._gone, 120, "MariaDB shutdown")

    def start(self) -> None:
        daemon = ["start-stop-daemon", "--start", "--oknodo", "--background"]
        daemon += ["--exec", "/usr/sbin/mariadbd"]
        deadline = time.monotonic() + 120
        while not self._ping():
            if time.monotonic() > deadline:
                raise AssertionError("MariaDB did not come back within 120s")
            if self._gone():  # (re)start only when no server process is left
                subprocess.run(daemon, capture_output=True, timeout=60)
            time.sleep(0.5)


class RedisOutage(Outage):
    """A private redis-server (AOF, fsync always) that is SIGKILLed and started again."""

    name = "own redis-server SIGKILLed"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.dir = target.workdir / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()
        self.target.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--appendonly", "yes", "--appendfsync", "always", "--save", "",
               "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(self._ping, 30, "the private redis-server")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def shutdown(self) -> None:
        self.stop()


class SQLiteOutage(Outage):
    """SQLite has no server: another process holds the database's exclusive lock instead."""

    name = "SQLite exclusively locked"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.conn: sqlite3.Connection | None = None

    def stop(self) -> None:
        path = self.target.url.removeprefix("sqlite:///")
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("BEGIN EXCLUSIVE")

    def start(self) -> None:
        if self.conn is not None:
            self.conn.execute("COMMIT")
            self.conn.close()
            self.conn = None


OUTAGES: dict[str, type[Outage]] = {
    "sqlite": SQLiteOutage,
    "postgres": PostgresOutage,
    "mysql": MariaDBOutage,
    "redis": RedisOutage,
}


def outage(target: Target, jobs: int = 2000, down: float = 4.0) -> Result:
    """Two workers drain; the storage goes away for ``down`` seconds at about a third."""
    server = OUTAGES[target.backend](target)
    try:
        with running(target, lease=15.0, concurrency=4) as run:
            ids = run.enqueue(jobs, sleep=0.005)
            started = time.monotonic()
            procs = [run.spawn(), run.spawn()]
            run.wait(lambda: run.done().total() >= jobs // 3, 300, "a third of the jobs ran")
            try:
                server.stop()
                stopped = time.monotonic()
                time.sleep(down)
            finally:
                server.start()
            outage_seconds = time.monotonic() - stopped
            at_restart = run.done().total()
            run.wait_settled(600)
            seconds = time.monotonic() - started
            for proc in procs:
                assert proc.poll() is None, f"a worker exited during the outage:\n{run.log(proc)}"
            progress = {p.pid: 0 for p in procs}
            for r in run.records()[at_restart:]:
                progress[r.pid] = progress.get(r.pid, 0) + 1
            # Jobs done just before the server went away may run again: any may rerun.
            lost, dups = run.finish(procs, set(ids.values()), rerun=set(ids.values()))
    finally:
        if isinstance(server, RedisOutage):
            server.shutdown()
    resumed = sum(1 for count in progress.values() if count)
    return Result(f"outage ({server.name})", target.backend, jobs, lost, len(dups), seconds,
                  f"unavailable {outage_seconds:.1f}s; {resumed}/2 workers resumed")  # fmt: skip


# -- 5. poison: a job that kills its own process ---------------------------------------


def poison(target: Target, max_retries: int = 2, others: int = 20) -> Result:
    """A job that SIGKILLs its process every time ends dead after its attempts, not in a loop."""
    node = f"poison-{uuid.uuid4().hex[:6]}"
    max_attempts = max_retries + 1
    # Concurrency 1: no innocent job runs next to the poison job when it kills the process.
    with running(target, lease=30.0, concurrency=1, max_retries=max_retries) as run:
        # The other jobs come once the poison job is dead: a job claimed next to it
        # would be charged its crashes (see ``bystander``), which is another test.
        bad_id = next(iter(run.enqueue(1, start=0, kill_until=ALWAYS)))
        started = time.monotonic()
        deaths = 0
        while True:
            # The supervisor: restart the worker whenever it dies, as systemd would.
            proc = run.spawn(node)

            def over(p: subprocess.Popen[bytes] = proc) -> bool:
                job = run.storage.get(bad_id)
                return p.poll() is not None or (job is not None and job.state == DEAD)

            run.wait(over, 60, "the worker died or the poison job was dead")
            if proc.poll() is None:
                break
            assert proc.returncode == -signal.SIGKILL, run.log(proc)
            deaths += 1
            assert deaths <= max_attempts, "the poison job keeps killing its worker"
        ids = run.enqueue(others, start=1, sleep=0.01)
        run.wait_settled(60, dead=1)
        seconds = time.monotonic() - started
        assert run.terminate(proc) == 0, run.log(proc)
        job = run.storage.get(bad_id)
        assert job is not None and job.state == DEAD
        assert deaths == max_attempts and job.attempt == max_attempts, (deaths, job)
        assert job.errors == (WORKER_LOST,) * max_attempts, job.errors
        run.wait(lambda: any(r.event == "dead" for r in run.records()), 10, "the death reported")
        records = run.records()
        assert [r.n for r in records if r.event == "dead"] == [bad_id], "reported once"
        assert sum(r.event == "kill" for r in records) == max_attempts
        lost, dups = tally(set(ids.values()), run.done())
        assert lost == 0
        assert run.remaining() == [job]
    return Result("poison job (kills itself)", target.backend, others + 1, lost, len(dups),
                  seconds, f"dead after {deaths} worker deaths = max attempts")  # fmt: skip


# -- 6. graceful stop: SIGTERM during long jobs ---------------------------------------------


def graceful(target: Target) -> Result:
    """SIGTERM: jobs that fit the stop timeout finish; longer ones are released and rerun."""
    with running(target, lease=5.0, concurrency=2, starts=True) as run:
        started = time.monotonic()
        # Jobs of 1.5 s with a 20 s stop timeout: the two running ones finish.
        short = run.enqueue(4, start=0, sleep=1.5)
        proc = run.spawn(stop_timeout=20)
        run.wait(lambda: sum(r.event == "start" for r in run.records()) == 2, 60, "two jobs start")
        # From the records, not the storage: a node may hold claimed jobs it has not started.
        running_now = {r.n for r in run.records() if r.event == "start"}
        assert run.terminate(proc, timeout=30) == 0, run.log(proc)
        assert running_now <= set(run.done()), (
            f"jobs {running_now} ran at SIGTERM but did not finish: {run.records()}"
        )
        left = run.remaining()
        assert {short[j.id] for j in left} == set(short.values()) - running_now
        assert all(j.state == WAITING and j.attempt == 0 for j in left), left

        # Jobs of 3 s with a 0.5 s stop timeout: released, attempt not counted.
        long = run.enqueue(2, start=10, sleep=3.0)
        proc = run.spawn(stop_timeout=0.5)
        run.wait(lambda: {r.n for r in run.records() if r.event == "start"} >= {"10", "11"}, 60,
                 "the long jobs start")  # fmt: skip
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        released = [run.storage.get(job_id) for job_id in long]

        def both_released() -> bool:
            nonlocal released
            released = [run.storage.get(job_id) for job_id in long]
            return all(r is not None and r.state == WAITING for r in released)

        run.wait(both_released, 10, "the long jobs were released")
        released_after = time.monotonic() - signalled
        assert all(r is not None and r.attempt == 0 and r.errors == () for r in released), released
        code = proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
        assert code == 0, run.log(proc)

        final = run.spawn()
        run.wait_settled(60)
        seconds = time.monotonic() - started
        expected = set(short.values()) | set(long.values())
        lost, dups = run.finish([final], expected, rerun=set(long.values()))
    return Result("graceful stop (SIGTERM)", target.backend, len(expected), lost, len(dups),
                  seconds, f"2 finished in the timeout; 2 released {released_after:.1f}s after "
                  f"SIGTERM (process exited after {exited_after:.1f}s)")  # fmt: skip


# -- 7. hostile payloads stored directly -------------------------------------------------


class Evil:
    """Unpickling this creates a marker directory: the visible side effect of running code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def hostile_payloads(marker: Path, count: int = 30, seed: int | None = None) -> list[bytes]:
    """Random bytes, every truncation of a valid payload, and pickles with a side effect."""
    rng = random.Random(seed)
    good = exqueue.JSONCodec().encode((1, "x", [2.5, None]), {"k": {"$": "y"}})
    payloads = [good[:cut] for cut in range(len(good))]
    payloads += [rng.randbytes(rng.randint(0, 64)) for _ in range(count)]
    payloads += [pickle.dumps(((Evil(marker),), {}), protocol=p) for p in (0, 2, 5)]
    return payloads


def hostile(target: Target, payloads: list[bytes], marker: Path) -> Result:
    """Stores ``payloads`` directly, next to good jobs; a drain buries each bad one and goes on."""
    codec = exqueue.JSONCodec()
    storage = target.open()
    ran: list[Any] = []
    try:
        queue = exqueue.Queue(storage, lease=30.0, poll_interval=0.05)
        queue.worker(name="hostile.job", concurrency=4, max_retries=0)(
            lambda *args, **kwargs: ran.append(args)
        )
        now = time.time()
        good = [codec.encode((f"good-{i}",), {}) for i in range(5)]
        jobs = [NewJob(uuid.uuid4().hex, "hostile.job", p, now, now, 1) for p in payloads + good]
        storage.enqueue(jobs)
        started = time.monotonic()
        queue.drain(timeout=120)
        seconds = time.monotonic() - started
        assert not marker.exists(), "a stored pickle was unpickled"
        lost = 0
        for job in jobs:
            try:
                codec.decode(job.payload)
                decodable = True
            except exqueue.SerializationError:
                decodable = False
            record = storage.get(job.id)
            if decodable:
                assert record is None, f"a decodable payload did not run: {job.payload!r}"
            else:
                assert record is not None and record.state == DEAD, (job.payload, record)
                assert record.attempt == 1 and len(record.errors) == 1
                assert "payload could not be decoded" in record.errors[0], record.errors
                shown = queue.get(job.id)  # reading the job must not unpickle it either
                assert shown is not None and shown.payload_error
                storage.delete(job.id)
        assert ("good-4",) in ran and not marker.exists()
        assert storage.list_jobs(limit=10) == []
    finally:
        storage.close()
    return Result(
        "hostile payloads",
        target.backend,
        len(jobs),
        lost,
        0,
        seconds,
        f"{len(payloads)} random/truncated/pickled payloads buried, good jobs ran",
    )


# -- 8. load with random failures over 4 processes -----------------------------------------


def load(
    target: Target,
    jobs: int = 50_000,
    procs: int = 4,
    fail_once: float = 0.10,
    always: float = 0.01,
    seed: int | None = None,
    timeout: float = 3600,
) -> Result:
    """``jobs`` jobs over ``procs`` worker processes; 10% fail once, 1% always."""
    rng = random.Random(seed)
    max_retries = 2
    with running(target, lease=30.0, concurrency=8, fsync=False, max_retries=max_retries) as run:
        plan: dict[str, int] = {}
        for n in range(jobs):
            roll = rng.random()
            plan[str(n)] = ALWAYS if roll < always else 1 if roll < always + fail_once else 0
        ids: dict[str, str] = {}
        for fail_until in (0, 1, ALWAYS):
            numbers = [int(n) for n, f in plan.items() if f == fail_until]
            for low in range(0, len(numbers), 1000):
                chunk = numbers[low : low + 1000]
                calls = [exqueue.Call(WORKER, (n,), {"fail_until": fail_until}) for n in chunk]
                ids.update(zip(run.queue.enqueue_many(calls), map(str, chunk), strict=True))
        doomed = {n for n, f in plan.items() if f == ALWAYS}
        started = time.monotonic()
        workers = [run.spawn() for _ in range(procs)]
        run.wait_settled(timeout, dead=len(doomed))
        seconds = time.monotonic() - started
        run.wait(lambda: sum(r.event == "dead" for r in run.records()) >= len(doomed), 30,
                 "every death was reported")  # fmt: skip
        for proc in workers:
            assert run.terminate(proc) == 0, run.log(proc)
        dead = run.storage.list_jobs(state=DEAD, limit=jobs + 1)
        assert {ids[j.id] for j in dead} == doomed
        assert all(j.attempt == max_retries + 1 and len(j.errors) == max_retries + 1 for j in dead)
        assert len(run.remaining()) == len(doomed), "something besides the dead jobs is left"
        records = run.records()
        done = Counter(r.n for r in records if r.event == "done")
        lost, dups = tally(set(plan) - doomed, done)
        fails = Counter(r.n for r in records if r.event == "fail")
        once = {n for n, f in plan.items() if f == 1}
        assert lost == 0, f"{lost} jobs never succeeded"
        assert not dups, f"jobs ran twice without any crash: {sorted(dups)[:10]}"
        assert all(fails[n] == 1 for n in once) and all(fails[n] == 3 for n in doomed)
        assert set(done) & doomed == set()
        reports = Counter(r.n for r in records if r.event == "dead")
        assert set(reports) == {j.id for j in dead} and set(reports.values()) == {1}
    return Result("load, 4 processes", target.backend, jobs, lost, len(dups), seconds,
                  f"{len(once)} failed once, {len(doomed)} dead after 3 attempts; "
                  f"{jobs / seconds:,.0f} jobs/s")  # fmt: skip


def bystander(target: Target) -> None:
    """A job enqueued next to a poison job must not die of the poison's crash unrun.

    With the default ``prefetch=0`` a node claims only what it starts at once, so
    a warm node (one that already finished a job) running ``concurrency=1`` never
    holds the bystander while the poison job kills the process.
    """
    node = f"bystander-{uuid.uuid4().hex[:6]}"
    with running(target, lease=30.0, concurrency=1, max_retries=0, starts=True) as run:
        proc = run.spawn(node)
        run.enqueue(1, start=0)  # warms the node up: prefetch starts after a finished job
        run.wait(lambda: "0" in run.done(), 60, "the first job ran")
        # One batch, so that one claim takes both: the poison job and its bystander.
        calls = [exqueue.Call(WORKER, (1,), {"kill_until": ALWAYS}), exqueue.Call(WORKER, (2,))]
        bad_id, good_id = run.queue.enqueue_many(calls)
        proc.wait(timeout=60)
        proc = run.spawn(node)
        run.wait(lambda: run.storage.get(bad_id) is not None and run.storage.get(bad_id).state
                 == DEAD, 60, "the poison job was dead")  # fmt: skip

        def settled() -> bool:
            good = run.storage.get(good_id)
            return good is None or good.state == DEAD

        run.wait(settled, 30, "the innocent job finished")
        good = run.storage.get(good_id)
        starts = [r for r in run.records() if r.n == "2" and r.event == "start"]
        assert good is None, (
            f"an innocent job died after {good.attempt} attempt(s), having started "
            f"{len(starts)} times: {good.errors}"
        )
        assert run.terminate(proc) == 0
