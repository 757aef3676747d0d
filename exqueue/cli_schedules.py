"""The ``exqueue schedules``, ``schedule-pause`` and ``schedule-resume`` commands.

With ``--app`` the registered schedules are shown with their expression, zone
and next fire; with ``--storage`` alone only what the store keeps (name, last
tick, paused), since the expressions live in the application's code.
"""

from __future__ import annotations

from typing import Any

import click
from tabulate import tabulate

from exqueue.cli import (
    echo_json,
    for_each_name,
    local_time,
    main,
    open_queue,
    safe,
    storage_options,
)
from exqueue.queue import Queue


@main.command()
@storage_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def schedules(
    storage: str | None, app: str | None, prefix: str | None, namespace: str | None, as_json: bool
) -> None:
    """Schedules: expression, zone, next fire, last tick, paused (registered ones need --app)."""
    queue = open_queue(storage, app, prefix, namespace, create=False)
    found = queue.schedules()
    if as_json:
        echo_json([info.to_dict() for info in found])
        return
    if not found:
        click.echo("no schedules")
        return
    rows: list[list[Any]] = [
        [
            safe(info.name),
            safe(info.expression or ""),
            info.zone or "",
            local_time(info.next_fire) if info.next_fire else "",
            local_time(info.last_tick) if info.last_tick else "never",
            "PAUSED" if info.paused else "no",
            "yes" if info.registered else ("NOT IN APP" if app else "?"),
        ]
        for info in found
    ]
    headers = ["name", "expression", "zone", "next fire", "last tick", "paused", "registered"]
    click.echo(tabulate(rows, headers=headers))
    if not app:
        click.echo("(expressions, zones and next fires need --app)")


main.command(
    "schedule-pause",
    help="Pause schedules on every node: their ticks pass without jobs until resumed.",
)(for_each_name(Queue.pause_schedule, "paused"))
main.command(
    "schedule-resume",
    help="Resume paused schedules: the next tick fires (paused ticks are not run).",
)(for_each_name(Queue.resume_schedule, "resumed"))
