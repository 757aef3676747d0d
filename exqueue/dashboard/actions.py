"""The dashboard's actions: POST only, each with a CSRF token, each logged with who did it.

``--read-only`` refuses them all (and the pages do not offer them). After an
action the browser is sent back (303) to the page it came from, where a note
says what was done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from exqueue.dashboard.reads import Filter
from exqueue.errors import ExqueueError

if TYPE_CHECKING:
    from exqueue.dashboard.app import Dashboard

log = logging.getLogger("exqueue.dashboard")


async def act(request: Request) -> Response:
    from exqueue.dashboard.pages import board_of

    board = board_of(request)
    if board.read_only:
        return PlainTextResponse("the dashboard is read-only\n", status_code=403)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not board.csrf.check(request.scope.get("exqueue.browser"), fields.get("csrf")):
        return PlainTextResponse(
            "missing or wrong CSRF token: reload the page and try again\n", status_code=403
        )
    action = request.path_params["action"]
    handler = HANDLERS.get(action)
    if handler is None:
        return PlainTextResponse(f"no action {action!r}\n", status_code=404)
    who = request.scope["exqueue.who"]
    from starlette.concurrency import run_in_threadpool

    try:
        note = await run_in_threadpool(handler, board, fields)
    except (ExqueueError, ValueError, KeyError) as exc:
        note = f"{action} failed: {exc}"
        log.warning("dashboard: %s: %s", who, note)
    else:
        log.info("dashboard: %s: %s", who, note)
    board.reader.invalidate()
    try:
        # Fresh counts now, inside the action, so the page it leads to does not
        # wait on the scan (and shows the action's effect).
        await run_in_threadpool(board.reader.stats)
    except Exception as exc:  # the page will try again; the action itself is done
        log.warning("dashboard: counts after %s: %s", action, exc)
    board.note(request, note)
    return RedirectResponse(_back(request, fields.get("next")), status_code=303)


def _back(request: Request, given: str | None) -> str:
    """Where to go after the action: the page it came from, if it is one of ours."""
    root = request.url_for("overview").path
    if given and given.startswith(root) and not given.startswith("//") and "\\" not in given:
        return given
    return root


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise ValueError(f"the form has no {name}")
    return value


def retry(board: Dashboard, fields: dict[str, str]) -> str:
    job_id = _required(fields, "job_id")
    return f"retried dead job {job_id} as {board.queue.retry(job_id)}"


def delete(board: Dashboard, fields: dict[str, str]) -> str:
    job_id = _required(fields, "job_id")
    if board.queue.delete(job_id):
        return f"deleted job {job_id}"
    return f"no job {job_id} to delete"


def cancel(board: Dashboard, fields: dict[str, str]) -> str:
    job_id = _required(fields, "job_id")
    outcome = board.queue.cancel(job_id)
    return {
        "cancelled": f"cancelled job {job_id} (now dead as cancelled)",
        "requested": f"asked the worker running job {job_id} to cancel it",
        "finished": f"job {job_id} had already finished",
        "deleted": f"deleted job {job_id}",
    }.get(outcome, f"cancel of job {job_id}: {outcome}")


def bulk(board: Dashboard, fields: dict[str, str]) -> str:
    """Retry or delete every dead job matching the filter (the count was confirmed)."""
    operation = _required(fields, "op")
    if operation not in ("retry", "delete"):
        raise ValueError(f"unknown bulk operation {operation!r}")
    chosen = Filter.parse(fields)
    if chosen.problems:
        raise ValueError("; ".join(chosen.problems))
    apply: Callable[[str], Any] = board.queue.retry if operation == "retry" else board.queue.delete
    done = skipped = 0
    for batch in board.reader.dead_batches(chosen):
        for record in batch:
            try:
                apply(record.id)
                done += 1
            except ExqueueError:  # someone acted on it meanwhile
                skipped += 1
    scope = describe(chosen)
    past = "retried" if operation == "retry" else "deleted"
    note = f"{past} {done} dead jobs{scope} (confirmed: {fields.get('count', '?')})"
    return note + (f"; {skipped} had changed meanwhile" if skipped else "")


def describe(chosen: Filter) -> str:
    parts = []
    if chosen.worker:
        parts.append(f"worker {chosen.worker}")
    if chosen.tag:
        parts.append(f"tag {chosen.tag[0]}={chosen.tag[1]}")
    return f" of {' and '.join(parts)}" if parts else ""


def pause_schedule(board: Dashboard, fields: dict[str, str]) -> str:
    name = _required(fields, "name")
    board.queue.pause_schedule(name)
    return f"paused schedule {name}"


def resume_schedule(board: Dashboard, fields: dict[str, str]) -> str:
    name = _required(fields, "name")
    board.queue.resume_schedule(name)
    return f"resumed schedule {name}"


def _pause_worker(board: Dashboard, fields: dict[str, str], paused: bool) -> str:
    name = _required(fields, "name")
    if not board.reader.can_pause():
        raise ValueError(f"{board.store_name} cannot pause worker types")
    board.reader.set_paused(name, paused)
    return f"{'paused' if paused else 'resumed'} worker type {name}"


HANDLERS: dict[str, Callable[[Dashboard, dict[str, str]], str]] = {
    "retry": retry,
    "delete": delete,
    "cancel": cancel,
    "bulk": bulk,
    "pause_schedule": pause_schedule,
    "resume_schedule": resume_schedule,
    "pause_worker": lambda board, fields: _pause_worker(board, fields, True),
    "resume_worker": lambda board, fields: _pause_worker(board, fields, False),
}
