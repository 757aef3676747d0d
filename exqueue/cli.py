"""The ``exqueue`` command line: run workers, and inspect and manage stored jobs.

Management commands work on a storage URL (``--storage`` or ``EXQUEUE_URL``)
without importing the application: the default codec is readable by any
process (``--prefix`` / ``--namespace`` reach non-default SQL tables or Redis keys).
Stored texts are printed with control characters escaped. ``worker`` needs the
application (``--app module:queue``).
Built on click (argument parsing, help, env vars) and tabulate (tables).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from tabulate import tabulate

from exqueue.errors import ExqueueError, JobNotFoundError
from exqueue.job import Job
from exqueue.queue import DEFAULT_URL, Queue
from exqueue.registry import connect

F = TypeVar("F", bound=Callable[..., Any])

#: How long past ``--stop-timeout`` a stopping worker may wait on its storage
#: (about one connect timeout) before it exits anyway.
STOP_GRACE = 10.0


def fail(message: str) -> NoReturn:
    click.echo(f"exqueue: error: {safe(message)}", err=True)
    sys.exit(1)


# C0 controls, DEL and C1 controls: stored texts (errors, worker names) come from
# job code and must not reach the operator's terminal as escape sequences.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f]")


def safe(value: Any, *, keep_newlines: bool = False) -> str:
    """``value`` as text with control characters shown as visible escapes (``\\x1b``)."""
    pattern = _CONTROL if keep_newlines else _CONTROL_ALL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


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
    command = click.option(
        "--prefix",
        "prefix",
        envvar="EXQUEUE_PREFIX",
        metavar="PREFIX",
        help="SQL table prefix of the storage (SQLStorage prefix=). Env: EXQUEUE_PREFIX.",
    )(command)
    command = click.option(
        "--namespace",
        "namespace",
        envvar="EXQUEUE_NAMESPACE",
        metavar="NAME",
        help="Redis key namespace of the storage (RedisStorage namespace=). "
        "Env: EXQUEUE_NAMESPACE.",
    )(command)
    return command


def open_queue(
    storage: str | None,
    app: str | None,
    prefix: str | None = None,
    namespace: str | None = None,
    *,
    create: bool = True,
) -> Queue:
    if app:
        queue = load_app(app)
        if storage:
            fail("give either --storage or --app, not both")
        if prefix or namespace:
            fail("--prefix and --namespace go with --storage; the app's storage has its own")
        return queue
    options: dict[str, Any] = {}
    if prefix:
        options["prefix"] = prefix
    if namespace:
        options["namespace"] = namespace
    # Read-only commands pass create=False: a mistyped store is an error, never a new one.
    return Queue(connect(storage or DEFAULT_URL, create=create, **options))


def storage_url(queue: Queue) -> str | None:
    """The URL the app's storage was opened with, when the backend tells (for comparison)."""
    engine = getattr(queue.storage, "engine", None)
    if engine is not None:
        return str(engine.url.render_as_string(hide_password=False))
    url = getattr(queue.storage, "_url", None)
    return url if isinstance(url, str) else None


def short_error(job: Job, width: int = 60) -> str:
    text = job.payload_error or job.last_error or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= width else last[: width - 1] + "…"


def running_for(job: Job, now: float) -> tuple[float | None, bool]:
    """Seconds a running job's attempt has run, and whether that is only an upper bound.

    A backend that does not record when the attempt was claimed gives the time
    since ``run_at`` (the attempt started no earlier): an upper bound.
    """
    if job.state != "running":
        return None, False
    if job.started_at is not None:
        return max(now - job.started_at.timestamp(), 0.0), False
    return max(now - job.run_at.timestamp(), 0.0), True


def duration(seconds: float) -> str:
    """``seconds`` as its two largest units: ``3d 4h``, ``5m 3s``, ``42s``."""
    rest = int(seconds)
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2])


def running_text(job: Job, now: float) -> str:
    seconds, bound = running_for(job, now)
    if seconds is None:
        return ""
    return ("at most " if bound else "") + duration(seconds)


def job_json(job: Job, now: float) -> dict[str, Any]:
    fields = job.to_dict()
    seconds, bound = running_for(job, now)
    exact = seconds is not None and not bound
    fields["running_for"] = round(seconds, 3) if exact and seconds is not None else None
    fields["running_for_at_most"] = round(seconds, 3) if bound and seconds is not None else None
    return fields


def local_time(value: Any) -> str:
    try:
        return str(value.astimezone().strftime("%Y-%m-%d %H:%M:%S"))
    except (OverflowError, ValueError, OSError):  # a damaged stored time
        return str(value)


def echo_json(value: Any) -> None:
    # json.dumps escapes C0 controls itself; with ensure_ascii=False it leaves DEL
    # and C1 (0x9b is a one-byte CSI to some terminals), so those become \u00XX:
    # still the same JSON value.
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo(re.sub("[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="exqueue")
def main() -> None:
    """exqueue: reliable background jobs. Manage stored jobs or run workers."""


@main.command()
@storage_options
@click.option("--stop-timeout", default=30.0, show_default=True, help="Seconds to finish jobs.")
@click.option("--processes", default=1, show_default=True, help="Worker processes to supervise.")
@click.option("--node", metavar="NAME", help="Stable node name (reclaims its own jobs at start).")
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    help="Recycle a worker process after this many jobs: it stops gracefully and "
    "(under --processes) a fresh one starts. Alone, it exits with status 75.",
)
@click.option(
    "--max-memory",
    type=click.IntRange(min=1),
    metavar="MB",
    help="Recycle a worker process once its resident memory passes MB (as --max-jobs).",
)
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Do not fire the app's schedules on this node (other nodes fire them).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    metavar="PORT",
    help="Serve Prometheus metrics on PORT (needs exqueue[prometheus]); under "
    "--processes one endpoint sums every child.",
)
@click.option("--metrics-child", is_flag=True, hidden=True)
@click.option("-v", "--verbose", is_flag=True, help="Log every job (INFO).")
def worker(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    stop_timeout: float,
    processes: int,
    node: str | None,
    max_jobs: int | None,
    max_memory: int | None,
    no_schedules: bool,
    metrics_port: int | None,
    metrics_child: bool,
    verbose: bool,
) -> None:
    """Run the application's workers (and fire its schedules) until SIGINT or SIGTERM."""
    if not app:
        fail("worker needs the application: --app package.module:queue (or EXQUEUE_APP)")
    source = click.get_current_context().get_parameter_source("storage")
    if storage and source is click.core.ParameterSource.COMMANDLINE:
        fail("worker uses the app's own storage; drop --storage")
    if prefix or namespace:
        fail("worker uses the app's own storage; drop --prefix / --namespace")
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
        extra += ["--max-jobs", str(max_jobs)] if max_jobs else []
        extra += ["--max-memory", str(max_memory)] if max_memory else []
        extra += ["--no-schedules"] if no_schedules else []
        if metrics_port is not None:
            from exqueue.cli_observe import serve_children_metrics

            extra += serve_children_metrics(app, metrics_port)
        sys.exit(supervise(app, processes, base, stop_timeout, extra))
    queue = load_app(app)
    if not queue.workers:
        fail(f"{app} has no registered workers")
    if storage and storage != storage_url(queue):
        # EXQUEUE_URL is often set for the management commands; the worker still
        # runs on the app's storage, so only a different store is worth a word.
        click.echo(
            f"exqueue: warning: EXQUEUE_URL names {safe(storage)!r} but the worker uses "
            f"the app's own storage ({safe(storage_url(queue) or type(queue.storage).__name__)})",
            err=True,
        )
    if node:
        queue.node = node
    if no_schedules:
        queue.run_schedules = False
    if metrics_port is not None or metrics_child:
        from exqueue.cli_observe import add_metrics

        add_metrics(queue, None if metrics_child else metrics_port)
    from exqueue.supervisor import RECYCLE_STATUS, Recycler

    recycler = Recycler(max_jobs, max_memory)
    recycler.watch(queue.workers)
    queue.on_abandoned = recycler.abandoned
    bound_stop(queue, STOP_GRACE)
    queue.run(stop_timeout=stop_timeout)
    if recycler.reason is not None:
        sys.exit(RECYCLE_STATUS)


def bound_stop(queue: Queue, grace: float) -> None:
    """Make ``queue.stop(timeout)`` end the process once ``timeout + grace`` has passed.

    With the storage gone, releasing each unfinished job waits on it in turn, so
    a stop could take minutes. Past the bound the worker exits with status 1; a
    job it could not release is recovered once its lease expires, as when a node
    is lost.
    """
    stop = queue.stop

    def stop_within(timeout: float = 30.0) -> None:
        def overdue() -> None:
            click.echo(
                f"exqueue: error: the worker did not stop within {timeout + grace:g}s "
                "(is the storage reachable?); exiting. Jobs it could not release run "
                "again once their leases expire.",
                err=True,
            )
            os._exit(1)

        timer = threading.Timer(timeout + grace, overdue)
        timer.daemon = True
        timer.start()
        try:
            stop(timeout)
        finally:
            timer.cancel()

    queue.stop = stop_within  # type: ignore[method-assign]  # shadows the method


@main.command()
@storage_options
@click.option("--state", type=click.Choice(["waiting", "running", "dead"]), help="Only this state.")
@click.option("--worker", "worker_name", metavar="NAME", help="Only this worker type.")
@click.option(
    "--tag",
    metavar="KEY=VALUE",
    help="Only jobs whose meta has KEY set to VALUE.",
)
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many jobs.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    state: Any,
    worker_name: str | None,
    tag: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored jobs, oldest first."""
    pair = None
    if tag is not None:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            fail(f"--tag must look like KEY=VALUE, not {tag!r}")
        pair = (key, value)
    queue = open_queue(storage, app, prefix, namespace, create=False)
    found = queue.jobs(state=state, worker=worker_name, limit=limit, tag=pair)
    now = queue.clock()
    if as_json:
        echo_json([job_json(job, now) for job in found])
        return
    if not found:
        click.echo("no jobs")
        return
    rows = [
        [
            safe(job.id),
            safe(job.worker),
            job.state,
            f"{job.attempt}/{job.max_attempts}",
            local_time(job.run_at),
            safe(short_error(job)),
        ]
        for job in found
    ]
    headers = ["id", "worker", "state", "attempt", "run at", "last error"]
    if any(job.state == "running" for job in found):
        # How long each running job has run and where: a hung job shows up here.
        headers[4:4] = ["node", "running for"]
        for row, job in zip(rows, found, strict=True):
            row[4:4] = [safe(job.node or ""), running_text(job, now)]
    if any(job.priority for job in found):
        # Only where it tells something: most stores never set a priority.
        headers.insert(3, "priority")
        for row, job in zip(rows, found, strict=True):
            row.insert(3, str(job.priority))
    click.echo(tabulate(rows, headers=headers))


@main.command()
@storage_options
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    job_id: str,
    as_json: bool,
) -> None:
    """Show one job with its arguments and its errors (the first and the last 20)."""
    queue = open_queue(storage, app, prefix, namespace, create=False)
    job = queue.get(job_id)
    if job is None:
        fail(f"no job with id {job_id!r}")
    now = queue.clock()
    if as_json:
        echo_json(job_json(job, now))
        return
    fields = job.to_dict()
    errors = fields.pop("errors")
    fields.pop("last_error")
    optional = ("payload_error", "node", "started_at", "timeout", "expires_at", "unique_key")
    for key in (*optional, "partition"):
        if fields[key] is None:
            fields.pop(key)
    meta = fields.pop("meta")
    if meta:
        fields["meta"] = ", ".join(f"{key}={value}" for key, value in meta.items())
    if job.timeout is not None:
        fields["timeout"] = f"{job.timeout:g}s"
    if job.state == "running":
        fields["running for"] = running_text(job, now)
    rows = [[key, safe(value)] for key, value in fields.items()]
    click.echo(tabulate(rows, tablefmt="plain"))
    count = fields["error_count"]
    if count > len(errors):
        click.echo(f"\n{count} errors, showing the first and last {len(errors) - 1}")
    for number, error in zip(job.error_numbers, errors, strict=True):
        click.echo(f"\nerror {number} of {count}:\n{safe(error, keep_newlines=True)}")


def for_each_job(job_ids: tuple[str, ...], act: Callable[[str], str | None]) -> None:
    """Apply ``act`` to every id, printing what it says; None means there is no such job.

    One id that fails does not stop the others; the exit status is 1 if any failed.
    """
    failed = False
    for job_id in job_ids:
        try:
            said = act(job_id)
        except ExqueueError as exc:
            click.echo(f"exqueue: error: {safe(exc)}", err=True)
            failed = True
            continue
        if said is None:
            click.echo(f"exqueue: error: no job with id {job_id!r}", err=True)
            failed = True
        else:
            click.echo(said)
    if failed:
        sys.exit(1)


@main.command()
@storage_options
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
@click.option("--worker", "worker_name", metavar="NAME", help="With --all-dead: only this type.")
def retry(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    job_ids: tuple[str, ...],
    all_dead: bool,
    worker_name: str | None,
) -> None:
    """Re-queue dead jobs as new jobs (printed as OLD -> NEW)."""
    if bool(job_ids) == all_dead:
        fail("give job ids or --all-dead (not both)")
    if worker_name and not all_dead:
        fail("--worker goes with --all-dead")
    queue = open_queue(storage, app, prefix, namespace)
    if all_dead:
        new_ids = queue.retry_dead(worker=worker_name)
        click.echo(f"re-queued {len(new_ids)} dead jobs")
        return
    for_each_job(job_ids, lambda job_id: f"{safe(job_id)} -> {queue.retry(job_id)}")


@main.command()
@storage_options
@click.argument("job_ids", nargs=-1, required=True)
def delete(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    job_ids: tuple[str, ...],
) -> None:
    """Delete waiting or dead jobs (a running job is refused)."""
    queue = open_queue(storage, app, prefix, namespace)

    def delete_one(job_id: str) -> str | None:
        return f"deleted {safe(job_id)}" if queue.delete(job_id) else None

    for_each_job(job_ids, delete_one)


@main.command()
@storage_options
@click.option(
    "--delete", "remove", is_flag=True, help="Remove a waiting job instead of keeping it."
)
@click.argument("job_ids", nargs=-1, required=True)
def cancel(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    remove: bool,
    job_ids: tuple[str, ...],
) -> None:
    """Cancel jobs: a waiting one at once (kept dead as "cancelled" unless --delete),
    a running one at its worker's next heartbeat."""
    queue = open_queue(storage, app, prefix, namespace)
    said = {
        "cancelled": "cancelled {} (kept as dead)",
        "deleted": "cancelled and deleted {}",
        "requested": "cancel requested for running job {}: its worker stops it",
        "finished": "{} is already dead; nothing to cancel",
    }

    def cancel_one(job_id: str) -> str | None:
        try:
            outcome = queue.cancel(job_id, delete=remove)
        except JobNotFoundError:
            return None
        return said[outcome].format(safe(job_id))

    for_each_job(job_ids, cancel_one)


@main.command()
@storage_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--history",
    "history_minutes",
    type=click.IntRange(min=1, max=24 * 60),
    is_flag=False,
    flag_value=60,
    default=None,
    metavar="[MINUTES]",
    help="Outcomes per worker type over the last MINUTES (default 60; kept 24 h).",
)
def stats(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    as_json: bool,
    history_minutes: int | None,
) -> None:
    """Counts per worker type: waiting (runnable), scheduled, running, dead, paused."""
    queue = open_queue(storage, app, prefix, namespace, create=False)
    if history_minutes is not None:
        from exqueue.cli_observe import show_history

        show_history(queue, history_minutes, as_json)
        return
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
                    "paused": row.paused,
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
        [safe(name), row.waiting, row.scheduled, row.running, row.dead]
        for name, row in counts.items()
    ]
    if any(row.paused for row in counts.values()):
        # Only where it tells something: most stores never pause a type.
        headers.append("paused")
        for row, name in zip(rows, counts, strict=True):
            row.append("PAUSED" if counts[name].paused else "")
    if with_app:
        headers.append("registered")
        for row, name in zip(rows, counts, strict=True):
            row.append("yes" if counts[name].registered else "NO WORKER")
    click.echo(tabulate(rows, headers=headers))


# The schedule commands register themselves on ``main``.
import exqueue.cli_dashboard  # noqa: E402, F401
import exqueue.cli_limits  # noqa: E402, F401
import exqueue.cli_observe  # noqa: E402, F401
import exqueue.cli_schedules  # noqa: E402, F401


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
