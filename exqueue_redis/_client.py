"""RedisStorage's connection helpers: opening a client from a URL, and small utilities.

No client-side retries: a retried script whose first reply was lost would apply
twice (e.g. enqueue, then fail as a duplicate).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.retry import Retry

_TRUTHY = {"1", "true", "yes", "on"}


def connect(url: str, cluster: bool, socket_timeout: float, connect_timeout: float) -> Any:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    cluster = cluster or any(k == "cluster" and v.lower() in _TRUTHY for k, v in query)
    url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "cluster"])))
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    # No client-side retries: a retried script whose first reply was lost would
    # apply twice (e.g. enqueue, then fail as a duplicate). The pool already
    # replaces connections that the server closed, so a restart causes no error
    # once the server is back.
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


def decodes_responses(client: Any) -> bool:
    kwargs = getattr(client, "get_connection_kwargs", None)
    return bool(kwargs and kwargs().get("decode_responses"))


def quietly_close(pubsub: Any) -> None:
    try:
        pubsub.close()
    except (RedisError, OSError):
        pass  # closing a connection that is already broken


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
