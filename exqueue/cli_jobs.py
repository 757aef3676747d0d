"""The job commands of the ``exqueue`` command line: ``jobs``, ``show``,
``retry``, ``delete``, ``cancel`` and ``stats``, registered on :func:`exqueue.cli.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from tabulate import tabulate

from exqueue.cli import (
    duration,
    echo_json,
    fail,
    local_time,
    main,
    open_queue,
    safe,
    storage_options,
)
from exqueue.errors import ExqueueError, JobNotFoundError
from exqueue.job import Job
from exqueue.queue import Queue
from exqueue.storage import METADATA, JobState
from exqueue.storage_scan import JOB_SCAN, JobScan, SupportsJobScan

#: With ``--tag``, the most jobs one ``exqueue jobs`` reads where the store scans in
#: bounds (capability job_scan), as a dashboard page does: a tag that matches few of
#: many jobs gives a partial listing and a cursor, not one long read of them all.
SCAN_BUDGET = 10_000


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


def find_jobs(
    queue: Queue,
    state: JobState | None,
    worker: str | None,
    tag: tuple[str, str] | None,
    limit: int,
    after_seq: int | None,
    budget: int,
) -> tuple[list[Job], int | None]:
    """The jobs ``exqueue jobs`` lists, and the ``seq`` a partial listing stopped at.

    With a tag, on a store that scans in bounds (capability job_scan), one call
    reads at most ``budget`` jobs; when that ends before ``limit`` match, the
    second value is where to go on (else None). Other stores read until ``limit``
    match, as ``Queue.jobs`` does.
    """
    storage = queue.storage
    capabilities = storage.capabilities
    if (
        tag is not None
        and METADATA in capabilities
        and JOB_SCAN in capabilities
        and isinstance(storage, SupportsJobScan)
    ):
        scan = JobScan(
            state=state, worker=worker, tag=tag, after_seq=after_seq, limit=limit, budget=budget
        )
        found = storage.scan_jobs(scan)
        listed = [Job.from_record(record, queue.codec) for record in found.jobs]
        return listed, (found.next_after if len(listed) < limit else None)
    return queue.jobs(state, worker, limit, tag=tag, after_seq=after_seq), None


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
@click.option(
    "--after-seq",
    type=click.IntRange(min=0),
    metavar="SEQ",
    help="Only jobs stored after this one (the cursor a partial --tag listing prints).",
)
@click.option(
    "--scan-budget",
    default=SCAN_BUDGET,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --tag, read at most this many jobs (where the store scans in bounds).",
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
    after_seq: int | None,
    scan_budget: int,
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
    found, stopped = find_jobs(queue, state, worker_name, pair, limit, after_seq, scan_budget)
    now = queue.clock()
    if stopped is not None:
        # On stderr: --json output stays one JSON value, and a table stays greppable.
        click.echo(
            f"searched up to {scan_budget:,} jobs (to seq {stopped}) and found {len(found)};"
            f" continue with --after-seq {stopped}",
            err=True,
        )
    if as_json:
        echo_json([job_json(job, now) for job in found])
        return
    if not found:
        click.echo("no jobs" if stopped is None else "no jobs among those searched")
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
