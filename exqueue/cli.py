"""The ``exqueue`` command line: run workers, and inspect and manage stored jobs.

Management commands work on a storage URL (``--storage`` or ``EXQUEUE_URL``)
without importing the application: the default codec is readable by any
process. ``worker`` needs the application (``--app module:queue``).
Built on click (argument parsing, help, env vars) and tabulate (tables).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from tabulate import tabulate

from exqueue.errors import ExqueueError
from exqueue.job import Job
from exqueue.queue import DEFAULT_URL, Queue

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    click.echo(f"exqueue: error: {message}", err=True)
    sys.exit(1)


def load_app(spec: str) -> Queue:
    """Import ``module:attribute`` and return the Queue it names."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        fail(f"--app must look like 'package.module:queue', not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import app module {module_name!r}: {exc}")
    queue = getattr(module, attribute, None)
    if not isinstance(queue, Queue):
        fail(f"{spec!r} is not an exqueue.Queue (found {type(queue).__name__})")
    return queue


def storage_options(command: F) -> F:
    command = click.option(
        "--app",
        "app",
        envvar="EXQUEUE_APP",
        metavar="MODULE:QUEUE",
        help="The application's Queue (its storage is used). Env: EXQUEUE_APP.",
    )(command)
    command = click.option(
        "--storage",
        "storage",
        envvar="EXQUEUE_URL",
        metavar="URL",
        help=f"Storage URL (default {DEFAULT_URL}). Env: EXQUEUE_URL.",
    )(command)
    return command


def open_queue(storage: str | None, app: str | None) -> Queue:
    if app:
        queue = load_app(app)
        if storage:
            fail("give either --storage or --app, not both")
        return queue
    return Queue(storage or DEFAULT_URL)


def short_error(job: Job, width: int = 60) -> str:
    text = job.payload_error or job.last_error or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= width else last[: width - 1] + "…"


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="exqueue")
def main() -> None:
    """exqueue: reliable background jobs. Manage stored jobs or run workers."""


@main.command()
@storage_options
@click.option("--stop-timeout", default=30.0, show_default=True, help="Seconds to finish jobs.")
@click.option("--processes", default=1, show_default=True, help="Worker processes to supervise.")
@click.option("--node", metavar="NAME", help="Stable node name (reclaims its own jobs at start).")
@click.option("-v", "--verbose", is_flag=True, help="Log every job (INFO).")
def worker(
    storage: str | None,
    app: str | None,
    stop_timeout: float,
    processes: int,
    node: str | None,
    verbose: bool,
) -> None:
    """Run the application's workers until SIGINT or SIGTERM."""
    if not app:
        fail("worker needs the application: --app package.module:queue (or EXQUEUE_APP)")
    if storage:
        fail("worker uses the app's own storage; drop --storage")
    if processes < 1:
        fail("--processes must be at least 1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("exqueue").setLevel(logging.INFO)
    if processes > 1:
        from exqueue.supervisor import supervise

        base = node or f"{socket.gethostname()}-{os.getpid()}"
        extra = ["--verbose"] if verbose else []
        sys.exit(supervise(app, processes, base, stop_timeout, extra))
    queue = load_app(app)
    if not queue.workers:
        fail(f"{app} has no registered workers")
    if node:
        queue.node = node
    queue.run(stop_timeout=stop_timeout)


@main.command()
@storage_options
@click.option("--state", type=click.Choice(["waiting", "running", "dead"]), help="Only this state.")
@click.option("--worker", "worker_name", metavar="NAME", help="Only this worker type.")
@click.option("--limit", default=100, show_default=True, help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs(
    storage: str | None,
    app: str | None,
    state: Any,
    worker_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored jobs, oldest first."""
    queue = open_queue(storage, app)
    found = queue.jobs(state=state, worker=worker_name, limit=limit)
    if as_json:
        echo_json([job.to_dict() for job in found])
        return
    if not found:
        click.echo("no jobs")
        return
    rows = [
        [
            job.id,
            job.worker,
            job.state,
            f"{job.attempt}/{job.max_attempts}",
            job.run_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            short_error(job),
        ]
        for job in found
    ]
    headers = ["id", "worker", "state", "attempt", "run at", "last error"]
    click.echo(tabulate(rows, headers=headers))


@main.command()
@storage_options
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(storage: str | None, app: str | None, job_id: str, as_json: bool) -> None:
    """Show one job with its arguments and every recorded error."""
    queue = open_queue(storage, app)
    job = queue.get(job_id)
    if job is None:
        fail(f"no job with id {job_id!r}")
    if as_json:
        echo_json(job.to_dict())
        return
    fields = job.to_dict()
    errors = fields.pop("errors")
    fields.pop("last_error")
    if fields["payload_error"] is None:
        fields.pop("payload_error")
    click.echo(tabulate([[key, value] for key, value in fields.items()], tablefmt="plain"))
    for number, error in enumerate(errors, 1):
        click.echo(f"\nerror {number} of {len(errors)}:\n{error}")


@main.command()
@storage_options
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
@click.option("--worker", "worker_name", metavar="NAME", help="With --all-dead: only this type.")
def retry(
    storage: str | None,
    app: str | None,
    job_ids: tuple[str, ...],
    all_dead: bool,
    worker_name: str | None,
) -> None:
    """Re-queue dead jobs as new jobs (printed as OLD -> NEW)."""
    if bool(job_ids) == all_dead:
        fail("give job ids or --all-dead (not both)")
    if worker_name and not all_dead:
        fail("--worker goes with --all-dead")
    queue = open_queue(storage, app)
    if all_dead:
        new_ids = queue.retry_dead(worker=worker_name)
        click.echo(f"re-queued {len(new_ids)} dead jobs")
        return
    failed = False
    for job_id in job_ids:
        try:
            click.echo(f"{job_id} -> {queue.retry(job_id)}")
        except ExqueueError as exc:
            click.echo(f"exqueue: error: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@main.command()
@storage_options
@click.argument("job_ids", nargs=-1, required=True)
def delete(storage: str | None, app: str | None, job_ids: tuple[str, ...]) -> None:
    """Delete waiting or dead jobs (a running job is refused)."""
    queue = open_queue(storage, app)
    failed = False
    for job_id in job_ids:
        try:
            if queue.delete(job_id):
                click.echo(f"deleted {job_id}")
            else:
                click.echo(f"exqueue: error: no job with id {job_id!r}", err=True)
                failed = True
        except ExqueueError as exc:
            click.echo(f"exqueue: error: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@main.command()
@storage_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(storage: str | None, app: str | None, as_json: bool) -> None:
    """Counts per worker type: waiting (runnable), scheduled, running, dead."""
    queue = open_queue(storage, app)
    counts = queue.stats()
    with_app = bool(app)
    if as_json:
        echo_json(
            {
                name: {
                    "waiting": row.waiting,
                    "scheduled": row.scheduled,
                    "running": row.running,
                    "dead": row.dead,
                    **({"registered": row.registered} if with_app else {}),
                }
                for name, row in counts.items()
            }
        )
        return
    if not counts:
        click.echo("no jobs")
        return
    headers = ["worker", "waiting", "scheduled", "running", "dead"]
    rows: list[list[Any]] = [
        [name, row.waiting, row.scheduled, row.running, row.dead] for name, row in counts.items()
    ]
    if with_app:
        headers.append("registered")
        for row, name in zip(rows, counts, strict=True):
            row.append("yes" if counts[name].registered else "NO WORKER")
    click.echo(tabulate(rows, headers=headers))


def run() -> None:
    """Console entry point: errors become one line on stderr and a non-zero exit."""
    try:
        main(standalone_mode=True)
    except ExqueueError as exc:
        fail(str(exc))
    except Exception as exc:  # a driver's connection error, a bad path: one clear line
        if os.environ.get("EXQUEUE_DEBUG"):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(f"{type(exc).__name__}: {first_line} (set EXQUEUE_DEBUG=1 for the traceback)")
