"""The ``exqueue pause`` and ``exqueue resume`` commands: worker types paused cluster-wide.

A paused worker type's jobs are claimed by no node until it is resumed; jobs
already running finish. ``exqueue stats`` shows which types are paused.
"""

from __future__ import annotations

from typing import Any

import click

from exqueue.cli import main, open_queue, safe, storage_options


def _pause(paused: bool) -> Any:
    @storage_options
    @click.argument("names", nargs=-1, required=True)
    def command(
        storage: str | None,
        app: str | None,
        prefix: str | None,
        namespace: str | None,
        names: tuple[str, ...],
    ) -> None:
        queue = open_queue(storage, app, prefix, namespace, create=False)
        for name in names:
            if paused:
                queue.pause(name)
            else:
                queue.resume(name)
            click.echo(f"{'paused' if paused else 'resumed'} {safe(name)}")

    return command


main.command(
    "pause",
    help="Pause worker types on every node: their jobs wait until resumed (running ones finish).",
)(_pause(True))
main.command("resume", help="Resume paused worker types: every node claims their jobs again.")(
    _pause(False)
)
