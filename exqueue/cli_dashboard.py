"""The ``exqueue dashboard`` command: serve the web dashboard over a storage URL.

Binds 127.0.0.1 by default. Any other address needs credentials from the
environment (``EXQUEUE_DASHBOARD_TOKEN``, or ``EXQUEUE_DASHBOARD_USER`` and
``EXQUEUE_DASHBOARD_PASSWORD``): without them the command refuses to start.
"""

from __future__ import annotations

import click

from exqueue.cli import fail, main, open_queue, storage_options


@main.command()
@storage_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--read-only", is_flag=True, help="Show everything, offer and accept no action.")
def dashboard(
    storage: str | None,
    app: str | None,
    prefix: str | None,
    namespace: str | None,
    host: str,
    port: int,
    read_only: bool,
) -> None:
    """Serve the web dashboard (needs the extra: pip install 'exqueue[dashboard]')."""
    try:
        import uvicorn

        from exqueue.dashboard import Auth, create_app, is_loopback
    except ImportError as exc:
        fail(f"the dashboard needs its extra: pip install 'exqueue[dashboard]' ({exc})")
    try:
        auth = Auth.from_env()
    except ValueError as exc:
        fail(str(exc))
    if auth is None and not is_loopback(host):
        fail(
            f"refusing to serve the dashboard on {host} without authentication: set "
            "EXQUEUE_DASHBOARD_TOKEN, or EXQUEUE_DASHBOARD_USER and EXQUEUE_DASHBOARD_PASSWORD "
            "(or bind 127.0.0.1)"
        )
    queue = open_queue(storage, app, prefix, namespace, create=False)
    web = create_app(queue, read_only=read_only, auth=auth)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"exqueue dashboard on http://{shown}:{port}/ "
        f"({'read-only, ' if read_only else ''}{'authenticated' if auth else 'no authentication'})"
    )
    uvicorn.run(web, host=host, port=port, log_level="warning", server_header=False)
