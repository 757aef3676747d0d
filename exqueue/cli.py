"""The ``exqueue`` command line: the ``main`` group, its shared options and helpers,
and the ``worker`` command. The other commands live in ``cli_*`` modules that
register themselves on ``main`` (``cli_jobs``: inspecting and managing jobs).

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

from exqueue.errors import ExqueueError
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


def for_each_name(method: Callable[[Queue, str], None], done: str) -> Callable[..., None]:
    """A command taking NAMES that calls ``method(queue, name)`` for each in turn and
    echoes ``<done> <name>`` after each (``pause``, ``resume`` and their schedule twins)."""

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
            method(queue, name)
            click.echo(f"{done} {safe(name)}")

    return command


def storage_url(queue: Queue) -> str | None:
    """The URL the app's storage was opened with, when the backend tells (for comparison)."""
    engine = getattr(queue.storage, "engine", None)
    if engine is not None:
        return str(engine.url.render_as_string(hide_password=False))
    url = getattr(queue.storage, "_url", None)
    return url if isinstance(url, str) else None


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
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    envvar="EXQUEUE_PROCESSES",
    help="Worker processes to supervise. Default: one per usable CPU when the app has a "
    "worker type declared cpu_bound=True (on a store shared between processes), else 1. "
    "Env: EXQUEUE_PROCESSES.",
)
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
    processes: int | None,
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
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("exqueue").setLevel(logging.INFO)
    loaded: Queue | None = None
    if processes is None:
        from exqueue.supervisor import default_processes

        # The choice needs the app's worker types: import it here (the children
        # import it again; a single process keeps this one).
        loaded = load_app(app)
        processes, reason = default_processes(loaded)
        logging.getLogger("exqueue").info(
            "running %d worker process%s: %s (override with --processes)",
            processes,
            "" if processes == 1 else "es",
            reason,
        )
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
    queue = loaded if loaded is not None else load_app(app)
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


# The other command groups register themselves on ``main``.
import exqueue.cli_dashboard  # noqa: E402, F401
import exqueue.cli_jobs  # noqa: E402, F401
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
