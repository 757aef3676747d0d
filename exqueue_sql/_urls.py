"""Storage URLs to SQLAlchemy engines, with errors that say what is wrong.

``postgresql://`` and ``postgres://`` mean psycopg 3, ``mysql://`` and
``mariadb://`` mean PyMySQL; an explicit ``+driver`` is kept as given.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from exqueue.errors import ConfigurationError

_DEFAULT_DRIVER = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_BACKEND = {"postgres": "postgresql"}
# A pooled connection unused for this long is pinged before it is handed out.
IDLE_PING_SECONDS = 1.0
_EXTRA = {
    "sqlite": "exqueue[sql]",
    "postgresql": "exqueue[postgres]",
    "mysql": "exqueue[mysql]",
    "mariadb": "exqueue[mysql]",
}
_EXAMPLES = "'sqlite:///jobs.db', 'postgresql://user@host:5432/db', 'mysql://user@host:3306/db'"


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for a storage URL; ``ConfigurationError`` names the bad part."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"SQL storage URL {url!r} has no scheme: expected e.g. {_EXAMPLES}"
        )
    scheme, rest = url.split("://", 1)
    name, _, driver = scheme.lower().partition("+")
    if name not in _DEFAULT_DRIVER:
        raise ConfigurationError(
            f"SQL storage URL scheme {scheme!r} is not supported: use sqlite, postgresql "
            f"(postgres), mysql or mariadb, e.g. {_EXAMPLES}"
        )
    if driver:
        full = f"{_BACKEND.get(name, name)}+{driver}"
    else:
        full = _DEFAULT_DRIVER[name]
    try:
        netloc_port = urlsplit("x://" + rest).port
    except ValueError:
        raise ConfigurationError(
            f"SQL storage URL {_safe(url)!r}: the port is not a number between 0 and 65535"
        ) from None
    del netloc_port
    try:
        parsed = make_url(f"{full}://{rest}")
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"SQL storage URL {_safe(url)!r} cannot be parsed: {exc}"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.host:
            raise ConfigurationError(
                f"SQL storage URL {_safe(url)!r}: SQLite URLs have no host part; use "
                "'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db'"
            )
    elif not parsed.database:
        raise ConfigurationError(
            f"SQL storage URL {_safe(url)!r} names no database: add it as the path, "
            "e.g. 'postgresql://user@host:5432/mydb'"
        )
    return parsed


def is_memory(url: URL) -> bool:
    """A private in-memory SQLite database (``sqlite://`` or ``sqlite:///:memory:``)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def build_engine(url: URL) -> Engine:
    """An engine for ``url`` with the options the backend relies on."""
    options: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "sqlite":
        if is_memory(url):
            # One connection shared by every thread: the storage serializes use itself.
            options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    if backend in ("mysql", "mariadb"):
        # READ COMMITTED drops InnoDB's gap locks, which otherwise make claims and
        # enqueues deadlock on the claim index; locking reads see the latest rows.
        options["isolation_level"] = "READ COMMITTED"
        # PyMySQL's rollback is a round trip even when idle, and every transaction
        # here ends (commit or rollback) before its connection goes back.
        options["pool_reset_on_return"] = None
        options["pool_recycle"] = 3600
    try:
        engine = create_engine(url, **options)
    except NoSuchModuleError as exc:
        raise ConfigurationError(
            f"SQL storage URL {_safe(url)!r}: unknown database or driver {url.drivername!r} ({exc})"
        ) from None
    except ImportError as exc:
        extra = _EXTRA.get(backend, "exqueue[sql]")
        raise ConfigurationError(
            f"the database driver for {url.drivername!r} is not installed ({exc}); "
            f'install it with: pip install "{extra}"'
        ) from exc
    if backend != "sqlite":
        ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine, idle: float = IDLE_PING_SECONDS) -> None:
    """Replace a pooled connection that died while idle, checking only idle ones.

    A connection left over from before a server restart fails its ping on
    checkout and the pool opens a new one. Unlike ``pool_pre_ping``, which pings
    on every checkout (a round trip per transition), only a connection that sat
    unused for ``idle`` seconds is pinged; a connection that breaks while busy
    fails its statement, and SQLAlchemy then replaces every pooled connection.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["exqueue_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("exqueue_idle_since")
        if since is None or time.monotonic() - since < idle:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def _safe(url: str | URL) -> str:
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show only its scheme
        return url.split("://", 1)[0] + "://…"
