"""The ``exqueue nodes`` command and ``exqueue stats --history``: live worker
processes and per-minute outcome counts, read from the store."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from datetime import datetime
from typing import Any

import click
from tabulate import tabulate

from exqueue.cli import (
    duration,
    echo_json,
    fail,
    load_app,
    local_time,
    main,
    open_queue,
    safe,
    storage_options,
)
from exqueue.queue import Queue
from exqueue.storage import NodeInfo, schedules_as_json, types_as_json


def _when(epoch: float) -> str:
    try:
        return local_time(datetime.fromtimestamp(epoch))
    except (OverflowError, ValueError, OSError):  # a damaged stored time
        return str(epoch)


def _serial(node: NodeInfo, worker: str) -> bool:
    settings = node.types.get(worker)
    return settings is not None and settings.serial


@main.command()
@storage_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def nodes(
    storage: str | None, app: str | None, prefix: str | None, namespace: str | None, as_json: bool
) -> None:
    """Live worker processes: name, host, pid, up since, worker types, running jobs."""
    queue = open_queue(storage, app, prefix, namespace, create=False)
    found = queue.nodes()
    if as_json:
        echo_json(
            [
                {
                    "name": node.name,
                    "host": node.host,
                    "pid": node.pid,
                    "started_at": node.started_at,
                    "seen_at": node.seen_at,
                    "workers": dict(node.workers),
                    "running": node.running,
                    "types": types_as_json(node.types),
                    "schedules": schedules_as_json(node.schedules),
                }
                for node in found
            ]
        )
        return
    if not found:
        click.echo("no live nodes")
        return
    now = time.time()
    rows: list[list[Any]] = [
        [
            safe(node.name),
            safe(node.host),
            node.pid,
            _when(node.started_at),
            duration(max(now - node.seen_at, 0.0)) + " ago",
            ", ".join(
                f"{safe(name)}×{n}" + (" (serial)" if _serial(node, name) else "")
                for name, n in sorted(node.workers.items())
            ),
            node.running,
        ]
        for node in found
    ]
    headers = ["node", "host", "pid", "started", "last beat", "workers", "running"]
    click.echo(tabulate(rows, headers=headers))


def show_history(queue: Queue, minutes: int, as_json: bool) -> None:
    """``stats --history``: per worker type, the outcome totals of the last ``minutes``."""
    rows = queue.history(minutes=minutes)
    if as_json:
        echo_json(
            [
                {
                    "worker": row.worker,
                    "minute": row.minute,
                    "succeeded": row.succeeded,
                    "failed": row.failed,
                    "dead": row.dead,
                    "run_time": row.run_time,
                }
                for row in rows
            ]
        )
        return
    if not rows:
        click.echo(f"no outcomes in the last {minutes} minutes")
        return
    totals: dict[str, list[float]] = {}
    for row in rows:
        total = totals.setdefault(row.worker, [0, 0, 0, 0.0, 0])
        total[0] += row.succeeded
        total[1] += row.failed
        total[2] += row.dead
        total[3] += row.run_time
    table = []
    for name, (ok, failed, dead, run_time, _) in sorted(totals.items()):
        runs = ok + failed + dead
        mean = f"{1000 * run_time / runs:.1f} ms" if runs else ""
        table.append([safe(name), int(ok), int(failed), int(dead), mean])
    headers = ["worker", "succeeded", "failed (retried)", "dead", "mean run"]
    click.echo(f"last {minutes} minutes:")
    click.echo(tabulate(table, headers=headers))


def _prometheus() -> Any:
    try:
        import exqueue.prometheus as module
    except ImportError:
        fail("--metrics-port needs the Prometheus client: pip install 'exqueue[prometheus]'")
    return module


def add_metrics(queue: Queue, port: int | None) -> None:
    """Metrics for one worker process: served on ``port``, or (a supervised child,
    ``port`` None) written to the supervisor's multiprocess directory."""
    prometheus = _prometheus()
    if any(isinstance(m, prometheus.PrometheusMiddleware) for m in queue.hooks.chain):
        # The app added its own (on the default registry, which serve() exposes).
        if port is not None:
            prometheus.serve(port)
        return
    if port is None:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            fail("--metrics-child is for workers started by --processes with --metrics-port")
        queue.add_middleware(prometheus.PrometheusMiddleware(queue, gauges=False))
        return
    queue.add_middleware(prometheus.PrometheusMiddleware(queue))
    prometheus.serve(port)


def serve_children_metrics(app: str, port: int) -> list[str]:
    """The supervisor's side: a fresh multiprocess directory for the children, one
    endpoint summing them; returns the children's extra arguments."""
    directory = tempfile.mkdtemp(prefix="exqueue-metrics-")
    atexit.register(shutil.rmtree, directory, True)
    # Set before prometheus_client is imported here or in any child (it reads it at import).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    prometheus = _prometheus()
    prometheus.serve_children(port, load_app(app))
    return ["--metrics-child"]
