"""Storage URLs: ``exqueue.connect(url)`` finds the backend through entry points.

A backend registers its URL schemes in the ``exqueue.storages`` entry-point group
(``scheme = "package.module:StorageClass"``); the class is called with the URL.
A third-party package adds a scheme the same way, without touching the core.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any, cast

from exqueue.errors import ConfigurationError
from exqueue.storage import Storage

GROUP = "exqueue.storages"

#: The extra that installs each built-in scheme's driver, for error messages.
EXTRAS = {
    "postgresql": "exqueue[postgres]",
    "postgres": "exqueue[postgres]",
    "mysql": "exqueue[mysql]",
    "mariadb": "exqueue[mysql]",
    "redis": "exqueue[redis]",
    "rediss": "exqueue[redis]",
    "sqlite": "exqueue[sql]",
}


def url_scheme(url: str) -> str:
    """``"postgresql+psycopg://…"`` -> ``"postgresql"``."""
    if "://" not in url:
        raise ConfigurationError(
            f"storage URL {url!r} has no scheme: expected e.g. 'sqlite:///jobs.db', "
            "'postgresql://host/db', 'mysql+pymysql://host/db', 'redis://host:6379/0' "
            "or 'memory://'"
        )
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def schemes() -> dict[str, Any]:
    """Every registered scheme and its entry point."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def connect(url: str, *, create: bool = True, **options: Any) -> Storage:
    """Open the storage a URL names, e.g. ``connect("sqlite:///jobs.db")``.

    ``create=False`` opens only a store that exists: a backend that makes its
    store when opened takes a ``create`` keyword and, given False, raises
    ``ConfigurationError`` for a missing store instead of making an empty one.
    A backend without that keyword is opened as it is.
    """
    scheme = url_scheme(url)
    found = schemes()
    if scheme not in found:
        known = ", ".join(sorted(found)) or "none (is exqueue installed?)"
        raise ConfigurationError(
            f"no storage backend registered for scheme {scheme!r} in {url!r}; "
            f"registered schemes: {known}"
        )
    try:
        factory = found[scheme].load()
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        hint = f'; install it with: pip install "{extra}"' if extra else ""
        raise ConfigurationError(
            f"the {scheme!r} storage backend cannot be imported ({exc}){hint}"
        ) from exc
    if not create and _takes(factory, "create"):
        options["create"] = False
    return cast(Storage, factory(url, **options))


def _takes(factory: Any, keyword: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read: do not guess
        return False
    return keyword in parameters
