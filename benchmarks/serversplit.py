"""Where a Redis job's claim-and-acknowledge time goes: the server or the client (issue 19).

    python -m benchmarks.serversplit [--jobs 10000] [--concurrency 1,4,64] [--repeat 3]
                                     [--backend redis|postgres]

Starts its own redis-server on a free loopback port (so no other client's
commands are counted), batch-enqueues ``--jobs`` no-op jobs, then drains them
with ``queue.drain()`` in this process, thread worker type, at each concurrency.
Per job it reports:

- **server, scripts**: the time Redis spent running each command, from
  ``SLOWLOG`` with a threshold of 0 (every command, with its duration and its
  script's SHA, so claims and acknowledgements are told apart): claim
  (``CLAIM``), acknowledgement (``COMPLETE``, which ``complete_many`` runs for a
  batch), a job thread's success and next claim in one script (``FINISH``,
  ``finish_and_claim``), and the other scripts (heartbeat, recovery, expiry). The slow log
  also lists each command a script runs; those are inside the script's time
  and not added again;
- **server CPU**: the server process's CPU (``INFO cpu``, user + system) over
  the drain, which adds reading and writing the sockets to the scripts' time;
- **client CPU**: this process's CPU over the drain (``time.process_time``:
  every thread, the job threads, the acker, the dispatcher, the heartbeat);
- **wall**: the drain's time per job; how many jobs a claim and an
  acknowledgement carried on average; and the claim and acknowledgement round
  trips per job (``CLAIM``, ``COMPLETE`` and ``FINISH`` calls).

``--backend postgres`` drains on the benchmark's PostgreSQL database
(``benchmarks.common.PG_URL``, a table prefix of its own). Per-statement server
time would need ``pg_stat_statements``, which needs ``shared_preload_libraries``
and a server restart; instead **server CPU** is the CPU (``/proc/<pid>/stat``,
user + system) of the server processes serving this drain's connections (found
by their ``application_name``), and the script columns are empty.

Rounds interleave the concurrencies; figures are medians of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from tabulate import tabulate

import exqueue
from exqueue_redis import RedisStorage
from tests.support.redis_servers import RedisServer

#: Slow-log entries kept: more than a drain runs commands, so none is dropped.
SLOWLOG_MAX = 2_000_000


def server_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``; 0 once it is gone."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_drain(jobs: int, concurrency: int) -> dict[str, float]:
    import psycopg

    from benchmarks import common
    from exqueue_sql import SQLStorage

    common.ensure_databases()
    name = f"exqsplit{uuid.uuid4().hex[:8]}"
    storage = SQLStorage(f"{common.PG_URL}?application_name={name}", prefix=f"{name}_")

    def backends() -> dict[int, float]:
        with psycopg.connect(common.PG_DSN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchall()
        return {pid: _proc_cpu(pid) for (pid,) in rows}

    try:
        queue = exqueue.Queue(storage)

        @queue.worker(name="split.noop", concurrency=concurrency, max_retries=0)
        def noop(n: int) -> None:
            pass

        for start in range(0, jobs, 1000):
            queue.enqueue_many([noop.call(n) for n in range(start, min(start + 1000, jobs))])
        claims: list[int] = []
        claim = storage.claim

        def counted(*args: Any, **kwargs: Any) -> Any:
            records = claim(*args, **kwargs)
            if records:
                claims.append(len(records))
            return records

        storage.claim = counted  # type: ignore[method-assign]
        before = backends()
        cpu_before = time.process_time()
        began = time.perf_counter()
        ran = queue.drain(timeout=600)
        wall = time.perf_counter() - began
        cpu_after = time.process_time()
        after = backends()  # a connection opened during the drain started from 0
        if ran != jobs:
            raise RuntimeError(f"{ran} of {jobs} jobs ran")
        server = sum(used - before.get(pid, 0.0) for pid, used in after.items())
        nan = float("nan")
        return {
            "claim_us": nan,
            "ack_us": nan,
            "finish_us": nan,
            "other_us": nan,
            "server_cpu_us": server * 1e6 / jobs,
            "client_cpu_us": (cpu_after - cpu_before) * 1e6 / jobs,
            "wall_us": wall * 1e6 / jobs,
            "per_claim": jobs / max(len(claims), 1),
            "claims_per_job": nan,
            "per_ack": nan,
            "trips_per_job": nan,
        }
    finally:
        storage.destroy()
        storage.close()


def one_drain(url: str, jobs: int, concurrency: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    storage = RedisStorage(url, namespace=f"s{uuid.uuid4().hex[:8]}")
    try:
        queue = exqueue.Queue(storage)

        @queue.worker(name="split.noop", concurrency=concurrency, max_retries=0)
        def noop(n: int) -> None:
            pass

        queue.enqueue_many([noop.call(n) for n in range(jobs)])
        claims: list[int] = []  # jobs per claim that returned some, counted on the client
        claim = storage.claim

        def counted(*args: Any, **kwargs: Any) -> Any:
            records = claim(*args, **kwargs)
            if records:
                claims.append(len(records))
            return records

        storage.claim = counted  # type: ignore[method-assign]
        finish = getattr(storage, "finish_and_claim", None)
        if finish is not None:  # a job thread's claim made with its success counts too

            def finished(request: Any) -> Any:
                out = finish(request)
                if out.claimed:
                    claims.append(len(out.claimed))
                return out

            storage.finish_and_claim = finished  # type: ignore[method-assign]
        names = {script.sha: name for name, script in storage._scripts.items()}
        client.config_set("slowlog-max-len", str(SLOWLOG_MAX))
        client.config_set("slowlog-log-slower-than", "0")
        client.slowlog_reset()
        cpu_before, server_before = time.process_time(), server_cpu(client)
        began = time.perf_counter()
        ran = queue.drain(timeout=600)
        wall = time.perf_counter() - began
        cpu_after, server_after = time.process_time(), server_cpu(client)
        client.config_set("slowlog-log-slower-than", "-1")  # the reading is not counted
        if ran != jobs:
            raise RuntimeError(f"{ran} of {jobs} jobs ran")
        entries = client.slowlog_get(SLOWLOG_MAX)
        usec: dict[str, float] = {"CLAIM": 0.0, "COMPLETE": 0.0, "FINISH": 0.0, "other": 0.0}
        calls: dict[str, int] = {"CLAIM": 0, "COMPLETE": 0, "FINISH": 0, "other": 0}
        for entry in entries:
            command = entry["command"].split()
            # Only scripts: the slow log also lists each command a script runs,
            # whose time is already inside the script's.
            if len(command) < 2 or command[0].upper() not in (b"EVALSHA", b"EVAL"):
                continue
            name = names.get(command[1].decode(), "other")
            name = name if name in usec else "other"
            usec[name] += float(entry["duration"])
            calls[name] += 1
        return {
            "claim_us": usec["CLAIM"] / jobs,
            "ack_us": usec["COMPLETE"] / jobs,
            "finish_us": usec["FINISH"] / jobs,
            "other_us": usec["other"] / jobs,
            "server_cpu_us": (server_after - server_before) * 1e6 / jobs,
            "client_cpu_us": (cpu_after - cpu_before) * 1e6 / jobs,
            "wall_us": wall * 1e6 / jobs,
            "per_claim": jobs / max(len(claims), 1),
            # A FINISH call is a claim and an acknowledgement.
            "claims_per_job": (calls["CLAIM"] + calls["FINISH"]) / jobs,
            "per_ack": jobs / max(calls["COMPLETE"] + calls["FINISH"], 1),
            "trips_per_job": (calls["CLAIM"] + calls["COMPLETE"] + calls["FINISH"]) / jobs,
        }
    finally:
        client.config_set("slowlog-log-slower-than", "-1")
        storage.destroy()
        storage.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", default="1,4,64")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=("redis", "postgres"), default="redis")
    options = parser.parse_args()
    levels = [int(c) for c in options.concurrency.split(",")]
    runs: dict[int, list[dict[str, float]]] = {c: [] for c in levels}
    if options.backend == "postgres":
        for _ in range(options.repeat):
            for concurrency in levels:
                runs[concurrency].append(postgres_drain(options.jobs, concurrency))
    else:
        server = RedisServer(Path(tempfile.mkdtemp(prefix="exqueue-bench-")) / "redis").start()
        try:
            for _ in range(options.repeat):
                for concurrency in levels:
                    runs[concurrency].append(one_drain(server.url, options.jobs, concurrency))
        finally:
            server.kill()
    keys = [
        "claim_us",
        "ack_us",
        "finish_us",
        "other_us",
        "server_cpu_us",
        "client_cpu_us",
        "wall_us",
        "claims_per_job",
        "per_claim",
        "per_ack",
        "trips_per_job",
    ]
    rows = [[c, *(f"{statistics.median(r[k] for r in runs[c]):.1f}" for k in keys)] for c in levels]
    print(
        f"per job (µs), {options.jobs:,} no-op jobs, queue.drain() on "
        f"{'PostgreSQL' if options.backend == 'postgres' else 'a private redis-server'}, "
        f"medians of {options.repeat}"
    )
    headers = [
        "threads",
        "server: claim",
        "server: ack",
        "server: finish",
        "server: other scripts",
        "server CPU",
        "client CPU",
        "wall",
        "claims/job",
        "jobs/claim",
        "jobs/ack",
        "trips/job",
    ]
    print(tabulate(rows, headers, tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
