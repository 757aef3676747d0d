"""The dashboard's pages (GET only: no page changes anything)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from exqueue.dashboard import chart, reads, types
from exqueue.dashboard.reads import PAGE_SIZE, Filter, clipped_repr
from exqueue.storage import CANCEL, METADATA

if TYPE_CHECKING:
    from exqueue.dashboard.app import Dashboard


def board_of(request: Request) -> Dashboard:
    board: Dashboard = request.app.state.board
    return board


def overview(request: Request) -> Response:
    board = board_of(request)
    reader = board.reader
    stats = reader.stats()
    span = request.query_params.get("range", "hour")
    if span not in chart.RANGES:
        span = "hour"
    rows = reader.history(chart.RANGES[span][0])
    now = board.queue.clock()
    series = chart.buckets(rows, now, span) if rows is not None else None
    nodes = reader.nodes()
    # Every type with jobs, and every type a live node runs (with none yet).
    kinds = types.views(nodes, sorted(stats))
    serial = [name for name, view in kinds.items() if view.serial]
    return board.render(
        request,
        "overview.html",
        page="overview",
        stats=stats,
        kinds=kinds,
        knows_nodes=nodes is not None,
        totals=reader.totals(stats),
        paused=reader.paused(),
        can_pause=reader.can_pause(),
        heads={name: types.head(r, now) for name, r in reader.heads(serial).items()},
        span=span,
        chart=chart.svg(series, f"Outcomes over the last {span}") if series is not None else None,
        sums={k: sum(getattr(b, k) for b in series) for k in chart.KINDS} if series else None,
        nodes=nodes,
        now=now,
    )


def api_counts(request: Request) -> Response:
    """The counts an open page polls for: ``{"totals": {...}, "workers": {name: {...}}}``."""
    reader = board_of(request).reader
    stats = reader.stats()
    paused = reader.paused()
    body = {
        "totals": reader.totals(stats),
        "workers": {
            name: {
                "waiting": s.waiting,
                "scheduled": s.scheduled,
                "running": s.running,
                "dead": s.dead,
                "paused": None if paused is None else name in paused,
            }
            for name, s in stats.items()
        },
        "at": time.time(),
    }
    return JSONResponse(body, headers={"cache-control": "no-store"})


def _cursor(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def jobs(request: Request) -> Response:
    board = board_of(request)
    params = request.query_params
    search = (params.get("id") or "").strip()
    if search:
        found = board.reader.job(search)
        if found is not None:
            return RedirectResponse(request.url_for("job", job_id=search).path, status_code=303)
    chosen = Filter.parse(params)
    after = _cursor(params.get("after"))
    problems = list(chosen.problems)
    if search:
        problems.append(f"no job with id {search!r}")
    if chosen.tag is not None and not board.reader.has(METADATA):
        problems.append("this store keeps no job meta, so it cannot filter by tag")
    listed, next_after, partial = board.reader.page(chosen, after)
    stats = board.reader.stats()
    return board.render(
        request,
        "jobs.html",
        page="jobs",
        chosen=chosen,
        jobs=listed,
        after=after,
        next_after=next_after,
        partial=partial,
        scan_budget=reads.SCAN_BUDGET,
        page_size=PAGE_SIZE,
        workers=sorted(stats),
        problems=problems,
        now=board.queue.clock(),
        can_cancel=board.reader.has(CANCEL),
        search=search,
        totals=board.reader.totals(stats),
    )


def bulk_confirm(request: Request) -> Response:
    """The confirmation of a bulk retry or delete: how many dead jobs it would touch."""
    board = board_of(request)
    operation = request.query_params.get("op")
    if operation not in ("retry", "delete"):
        return board.render(
            request, "message.html", 400, page="jobs", message="unknown bulk action"
        )
    chosen = Filter.parse(request.query_params)
    count = board.reader.dead_matching(chosen)
    return board.render(
        request,
        "confirm.html",
        page="jobs",
        op=operation,
        chosen=chosen,
        count=count,
        back=request.url_for("jobs").path,
    )


def job(request: Request) -> Response:
    board = board_of(request)
    job_id = request.path_params["job_id"]
    found = board.reader.job(job_id)
    if found is None:
        return board.render(
            request, "message.html", 404, page="jobs", message=f"no job with id {job_id!r}"
        )
    detail, record = found
    now = board.queue.clock()
    return board.render(
        request,
        "job.html",
        page="jobs",
        job=detail,
        record=record,
        args=[clipped_repr(a) for a in detail.args],
        kwargs={k: clipped_repr(v) for k, v in detail.kwargs.items()},
        errors=list(zip(detail.error_numbers, detail.errors, strict=True)),
        error_count=max(detail.error_count, len(detail.errors)),
        scheduled=detail.state == "waiting" and record.run_at > now,
        can_cancel=board.reader.has(CANCEL),
        now=now,
    )


def schedules(request: Request) -> Response:
    board = board_of(request)
    return board.render(
        request, "schedules.html", page="schedules", schedules=board.reader.schedules()
    )


def nodes(request: Request) -> Response:
    board = board_of(request)
    found = board.reader.nodes()
    return board.render(request, "nodes.html", page="nodes", nodes=found, now=board.queue.clock())


def last_line(text: Any, width: int = 120) -> str:
    """The last line of a stored error (a traceback ends with the exception), cut to ``width``."""
    line = str(text or "").strip().splitlines()[-1:] or [""]
    return line[0][:width]
