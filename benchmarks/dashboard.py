"""Dashboard page times over HTTP against a big store (issue 18: every page under 300 ms).

    python -m benchmarks.dashboard [--backends sqlite,postgres,mariadb,redis]
                                   [--waiting 1000000] [--dead 100000] [--repeats 7]

For each backend, fills a fresh store with ``--dead`` dead and ``--waiting``
waiting jobs of one worker type (as ``benchmarks.claimcost`` does: a server-side
``INSERT ... SELECT`` on SQL, batch enqueue and bury through the protocol on
Redis), serves it with ``exqueue dashboard`` (a child process) on a loopback port, and times each
page with an HTTP client: one warm-up, then ``--repeats`` rounds over every page
in turn (interleaved, so a slow moment hits all pages alike). Prints the median
and range per page, and the time of one uncached ``counts()`` (the scan the
dashboard's counts cache keeps off the pages). One live node publishes the type
as serial, so the overview reads its settings and the type's blocking head.
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
from typing import Any

from tabulate import tabulate

from benchmarks import claimcost, common
from benchmarks.exq_app import JOB, NAMESPACE, PREFIX, make_queue, make_storage
from exqueue.storage import NodeInfo, ScheduleSettings, TypeSettings

TARGET_MS = 300.0


def pages(storage: Any) -> list[tuple[str, str]]:
    """(label, path) of every page, with cursors and ids taken from the filled store."""
    dead = storage.list_jobs(state="dead", limit=1)[0]
    deep = storage.list_jobs(state="waiting", limit=1, after_seq=dead.seq + 500_000)
    deep_seq = (deep[0].seq if deep else dead.seq) - 1
    waiting = storage.list_jobs(state="waiting", limit=1)[0]
    return [
        ("overview", "/"),
        ("overview, last day", "/?range=day"),
        ("live counts (JSON)", "/api/counts"),
        ("jobs, any state", "/jobs"),
        ("jobs, dead", "/jobs?state=dead"),
        ("jobs, waiting", "/jobs?state=waiting"),
        ("jobs, worker + dead", f"/jobs?state=dead&worker={JOB}"),
        ("jobs, waiting, deep page", f"/jobs?state=waiting&after={deep_seq}"),
        ("jobs, search by id", f"/jobs?id={waiting.id}"),
        ("job detail (dead)", f"/job/{dead.id}"),
        ("job detail (waiting)", f"/job/{waiting.id}"),
        ("bulk confirmation", "/jobs/bulk?op=retry&state=dead"),
        ("schedules", "/schedules"),
        ("nodes", "/nodes"),
        ("jobs, dead, tag matching none", "/jobs?state=dead&tag=team%3Dnone"),
    ]


class Server:
    """``exqueue dashboard`` in a child process, as an operator runs it (a server
    thread in this process would share the GIL with the timing client)."""

    def __init__(self, url: str, backend: str) -> None:
        import subprocess

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        where = ["--namespace", NAMESPACE] if backend == "redis" else ["--prefix", PREFIX]
        self.url = f"http://127.0.0.1:{port}"
        self.child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exqueue",
                "dashboard",
                "--storage",
                url,
                *where,
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
        )
        common.wait_until(self._answers, 30, "the dashboard to answer")

    def _answers(self) -> bool:
        import httpx

        if self.child.poll() is not None:
            raise common.BenchError("the dashboard exited")
        try:
            return httpx.get(self.url + "/static/dashboard.css").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.child.terminate()
        self.child.wait(10)


def time_pages(url: str, paths: list[tuple[str, str]], repeats: int) -> dict[str, list[float]]:
    import httpx

    times: dict[str, list[float]] = {label: [] for label, _ in paths}
    with httpx.Client(base_url=url, timeout=120) as client:
        for _, path in paths:  # warm-up: connections, templates, the counts cache
            client.get(path)
        for _ in range(repeats):
            for label, path in paths:
                started = time.perf_counter()
                answer = client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                if answer.status_code not in (200, 303):
                    raise common.BenchError(f"{path}: HTTP {answer.status_code}")
                times[label].append(elapsed)
    return times


def publish_serial_node(storage: Any) -> None:
    """A live node that runs the filled type serially, so the overview reads the
    nodes' published settings and the type's blocking head (its costliest form), and
    fires two schedules, so the Schedules page computes their next fires from the
    published definitions. Seen a day ahead, so that it stays live however long the
    measurement takes."""
    ahead = time.time() + 86_400
    settings = TypeSettings(1, serial=True, global_limit=2, rate=100, per=60.0, max_attempts=3)
    fires = {
        "nightly": ScheduleSettings(JOB, "30 2 * * 1-5", zone="Europe/Stockholm"),
        "poll": ScheduleSettings(JOB, None, 30.0),
    }
    node = NodeInfo("bench-node", "h", 1, ahead, ahead, {JOB: 1}, 0, {JOB: settings}, fires)
    storage.beat_node(node)


def measure(backend: str, waiting: int, dead: int, repeats: int, tmp: str) -> dict[str, Any]:
    storage = claimcost.fresh(backend, tmp)
    try:
        started = time.perf_counter()
        if backend == "redis":
            claimcost.fill_api(storage, waiting, dead)
        else:
            claimcost.fill_sql(storage, waiting, dead)
        filled = time.perf_counter() - started
        queue = make_queue(storage, 1)
        counted = queue.stats()[JOB]
        if (counted.waiting, counted.dead) != (waiting, dead):
            raise common.BenchError(f"filled {counted}, expected {waiting} waiting, {dead} dead")
        publish_serial_node(storage)
        cold = []
        for _ in range(3):
            started = time.perf_counter()
            storage.counts(time.time())
            cold.append((time.perf_counter() - started) * 1000)
        server = Server(claimcost.URLS[backend].format(tmp=tmp), backend)
        try:
            times = time_pages(server.url, pages(storage), repeats)
        finally:
            server.stop()
    finally:
        storage.close()
        if backend == "redis":
            common.flush_bench_redis()
        else:
            cleanup = make_storage(claimcost.URLS[backend].format(tmp=tmp))
            cleanup.destroy()
            cleanup.close()
    return {"backend": backend, "times": times, "counts_ms": cold, "fill_s": filled}


def main(argv: list[str] | None = None) -> int:
    parser = common.arguments("benchmarks.dashboard", __doc__)
    parser.add_argument("--backends", default="sqlite,postgres,mariadb,redis")
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    common.ensure_databases()
    tmp = tempfile.mkdtemp(prefix="exqbench-dash-") + "/dash.db"
    failed = False
    for backend in args.backends.split(","):
        print(
            f"{backend}: filling {args.waiting:,} waiting + {args.dead:,} dead ...",
            file=sys.stderr,
            flush=True,
        )
        result = measure(backend, args.waiting, args.dead, args.repeats, tmp)
        rows = []
        for label, values in result["times"].items():
            median = statistics.median(values)
            slow = median > TARGET_MS
            failed |= slow
            rows.append(
                [
                    label,
                    f"{median:.1f}",
                    f"{min(values):.1f}–{max(values):.1f}",
                    "no" if slow else "yes",
                ]
            )
        cold = result["counts_ms"]
        print(
            f"\n{backend}: {args.waiting:,} waiting + {args.dead:,} dead jobs "
            f"(filled in {result['fill_s']:.0f} s); one uncached counts(): "
            f"{statistics.median(cold):.0f} ms (median of 3); ms per page over HTTP, "
            f"median and range of {args.repeats}"
        )
        print(
            tabulate(
                rows,
                ["page", "median ms", "range ms", f"< {TARGET_MS:.0f} ms?"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
