"""The dashboard's Starlette application: routes, templates, static files, flash notes."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from exqueue.dashboard import actions, pages, types
from exqueue.dashboard.reads import Reader, utc_text
from exqueue.dashboard.security import Auth, Csrf, Guard
from exqueue.queue import Queue

HERE = Path(__file__).parent
log = logging.getLogger("exqueue.dashboard")


class Dashboard:
    """What the handlers share: the reader, templates, CSRF, settings, pending notes."""

    def __init__(self, queue: Queue, *, read_only: bool, counts_ttl: float, poll_seconds: float):
        self.queue = queue
        self.reader = Reader(queue, counts_ttl=counts_ttl)
        self.read_only = read_only
        self.poll_ms = int(poll_seconds * 1000)
        self.csrf = Csrf()
        self.store_name = type(queue.storage).__name__
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every stored string is text, never markup
            undefined=jinja2.StrictUndefined,
        )
        env.filters["utc"] = utc_text
        env.filters["last_line"] = pages.last_line
        env.globals["describe"] = types.describe
        self.templates = Jinja2Templates(env=env)
        self._notes: dict[str, str] = {}
        self._notes_lock = threading.Lock()

    def note(self, request: Request, text: str) -> None:
        """A one-time note shown on the browser's next page (the outcome of an action)."""
        with self._notes_lock:
            if len(self._notes) > 10_000:  # forgotten notes of gone browsers
                self._notes.clear()
            self._notes[request.scope["exqueue.browser"]] = text

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        with self._notes_lock:
            note = self._notes.pop(request.scope["exqueue.browser"], None)

        def link(route: str, query: dict[str, Any] | None = None, **path: Any) -> str:
            url = request.url_for(route, **path).path
            return f"{url}?{urlencode(query)}" if query else url

        response = self.templates.TemplateResponse(
            request,
            name,
            {
                "note": note,
                "link": link,
                "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                "read_only": self.read_only,
                "csrf": self.csrf.token(request.scope["exqueue.browser"]),
                "poll_ms": self.poll_ms,
                "store": self.store_name,
                **context,
            },
            status_code=status,
        )
        response.headers["cache-control"] = "no-store"
        return response


def build(
    queue: Queue, *, read_only: bool, auth: Auth | None, counts_ttl: float, poll_seconds: float
) -> Starlette:
    board = Dashboard(queue, read_only=read_only, counts_ttl=counts_ttl, poll_seconds=poll_seconds)
    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/api/counts", pages.api_counts, name="api_counts"),
        Route("/jobs", pages.jobs, name="jobs"),
        Route("/jobs/bulk", pages.bulk_confirm, name="bulk_confirm"),
        Route("/job/{job_id:path}", pages.job, name="job"),
        Route("/schedules", pages.schedules, name="schedules"),
        Route("/nodes", pages.nodes, name="nodes"),
        Route("/actions/{action}", actions.act, methods=["POST"], name="act"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Counts are a scan on SQL stores (about a second at a million jobs): read
        # them once before serving, so the first page does not wait on it.
        try:
            await run_in_threadpool(board.reader.stats)
        except Exception as exc:  # a store that is down now may be up for the first page
            log.warning("dashboard: could not read the counts at start: %s", exc)
        yield

    app = Starlette(routes=routes, middleware=[Middleware(Guard, auth=auth)], lifespan=lifespan)
    app.state.board = board
    return app
