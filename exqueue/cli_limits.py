"""The ``exqueue pause`` and ``exqueue resume`` commands: worker types paused cluster-wide.

A paused worker type's jobs are claimed by no node until it is resumed; jobs
already running finish. ``exqueue stats`` shows which types are paused.
"""

from __future__ import annotations

from exqueue.cli import for_each_name, main
from exqueue.queue import Queue

main.command(
    "pause",
    help="Pause worker types on every node: their jobs wait until resumed (running ones finish).",
)(for_each_name(Queue.pause, "paused"))
main.command("resume", help="Resume paused worker types: every node claims their jobs again.")(
    for_each_name(Queue.resume, "resumed")
)
