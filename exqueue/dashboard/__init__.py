"""exqueue's web dashboard: an ASGI app over a storage URL (extra ``exqueue[dashboard]``).

    from exqueue.dashboard import create_app
    app = create_app("sqlite:///exqueue.db")          # serve with any ASGI server
    fastapi_app.mount("/exqueue", create_app(queue))  # or inside an application

``exqueue dashboard --storage URL`` serves it with uvicorn. Everything is read
through the public :class:`exqueue.Queue` API; worker types are the ones the
store holds jobs for. See docs/dashboard.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exqueue.dashboard.security import Auth, is_loopback

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from exqueue.queue import Queue
    from exqueue.storage import Storage

__all__ = ["Auth", "create_app", "is_loopback"]

MISSING = (
    "the dashboard needs its extra: pip install 'exqueue[dashboard]' "
    "(Starlette, Jinja2, python-multipart, uvicorn)"
)


def create_app(
    target: Queue | Storage | str,
    *,
    read_only: bool = False,
    auth: Auth | None = None,
    counts_ttl: float = 2.0,
    poll_seconds: float = 2.0,
    **storage_options: Any,
) -> Starlette:
    """The dashboard over a queue, a storage, or a storage URL (opened, never created).

    ``read_only`` hides and refuses every action; ``auth`` (see :class:`Auth`,
    e.g. ``Auth.from_env()``) asks every request for a token or a password;
    ``counts_ttl`` is how old the shown counts may be; ``poll_seconds`` is how
    often an open page asks for fresh counts. ``storage_options`` go to
    :func:`exqueue.connect` with a URL (``prefix=``, ``namespace=``).
    """
    try:
        from exqueue.dashboard.app import build
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(f"{MISSING} ({exc})") from exc
    from exqueue.queue import Queue
    from exqueue.registry import connect

    if isinstance(target, str):
        queue = Queue(connect(target, create=False, **storage_options))
    elif isinstance(target, Queue):
        queue = target
    else:
        queue = Queue(target)
    return build(
        queue, read_only=read_only, auth=auth, counts_ttl=counts_ttl, poll_seconds=poll_seconds
    )
