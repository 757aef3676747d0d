"""The ``exqueue nodes`` command and ``exqueue stats --history``: live worker
processes and per-minute outcome counts, read from the store."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
from tabulate import tabulate

from exqueue.cli import duration, echo_json, local_time, main, open_queue, safe, storage_options
from exqueue.queue import Queue


def _when(epoch: float) -> str:
    try:
        return local_time(datetime.fromtimestamp(epoch))
    except (OverflowError, ValueError, OSError):  # a damaged stored time
        return str(epoch)


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
            ", ".join(f"{safe(name)}×{n}" for name, n in sorted(node.workers.items())),
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
