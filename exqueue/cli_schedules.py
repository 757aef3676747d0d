"""The ``exqueue schedules``, ``schedule-pause`` and ``schedule-resume`` commands.

With ``--storage`` alone a schedule's expression, zone and next fire come from
the definitions the live nodes publish with their heartbeat (and whether they
disagree); ``--app`` adds the application's own registrations, so schedules no
live node fires are shown with their next fire too.
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
from exqueue.schedules import ScheduleInfo


def _nodes(info: ScheduleInfo) -> str:
    """Which live nodes fire the schedule, as the table shows it."""
    if info.live is None:
        return "?"
    if not info.live:
        return "NONE" + (f" ({len(info.silent_nodes)} older unseen)" if info.silent_nodes else "")
    if info.disagree:
        return "DISAGREE: " + "; ".join(
            f"{safe(p.definition.expression)} ({p.definition.zone}) on {len(p.nodes)}"
            for p in info.published
        )
    return str(len(info.published[0].nodes))


@main.command()
@storage_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def schedules(
    storage: str | None, app: str | None, prefix: str | None, namespace: str | None, as_json: bool
) -> None:
    """Schedules: expression, zone, next fire, last tick, paused, live nodes firing them."""
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
            _nodes(info),
        ]
        + (["yes" if info.registered else "NOT IN APP"] if app else [])
        for info in found
    ]
    headers = ["name", "expression", "zone", "next fire", "last tick", "paused", "live nodes"]
    click.echo(tabulate(rows, headers=headers + (["in app"] if app else [])))
    if not app and any(info.expression is None for info in found):
        click.echo("(no live node publishes the ones without an expression: --app shows its own)")


main.command(
    "schedule-pause",
    help="Pause schedules on every node: their ticks pass without jobs until resumed.",
)(for_each_name(Queue.pause_schedule, "paused"))
main.command(
    "schedule-resume",
    help="Resume paused schedules: the next tick fires (paused ticks are not run).",
)(for_each_name(Queue.resume_schedule, "resumed"))
