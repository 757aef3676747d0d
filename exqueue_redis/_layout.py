"""Opening a namespace: its key layout version, and the in-place upgrade of layout 1.

``{ns}:schema`` holds the layout version. A new namespace gets
:data:`LAYOUT_VERSION`; one written by exqueue's version-1 code (layout ``1``) is
upgraded in place by the first storage that opens it, under a lock so that
processes starting together upgrade it once while the others wait; a layout
newer than this code refuses to open with :class:`~exqueue.errors.SchemaVersionError`.

The lock is ``{ns}:upgrade:lock`` (``SET NX PX`` with a random token, released
only by its holder). The upgrade itself is one script (``UPGRADE`` in
:mod:`exqueue_redis._scripts_read`), so a holder that dies mid-way leaves the
namespace either wholly version 1 or wholly version 2, and its lock expires.
Each upgrade appends a line to the list ``{ns}:schema:log``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import OutOfMemoryError

from exqueue.errors import ConfigurationError, SchemaVersionError

#: The key layout this code reads and writes.
LAYOUT_VERSION = 2
#: Layouts this code upgrades in place, oldest first.
UPGRADABLE = (1,)
#: How long the upgrade lock is held at most (a holder that died frees it then).
LOCK_MS = 30_000
#: How long a storage waits for another process's upgrade before giving up.
WAIT_SECONDS = 60.0

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def open_layout(
    client: Any, prefix: str, namespace: str, run: Callable[..., Any], *, wait: float = WAIT_SECONDS
) -> None:
    """Make the namespace at ``prefix`` layout :data:`LAYOUT_VERSION`, or refuse it.

    ``run(name, *args)`` runs one of the storage's scripts (``UPGRADE``).
    """
    key = prefix + "schema"
    # Read first and write only into a new namespace: on a Redis at maxmemory
    # a write is refused, yet reading and draining must work.
    found = client.get(key)
    if found is None:
        try:
            client.set(key, str(LAYOUT_VERSION), nx=True)
            found = client.get(key)
        except OutOfMemoryError:
            return  # nothing stored yet; enqueue will say "full"
    version = _version(found)
    if version == LAYOUT_VERSION:
        return
    if version in UPGRADABLE:
        _upgrade(client, prefix, namespace, run, version, wait)
        return
    if version is not None and version > LAYOUT_VERSION:
        raise SchemaVersionError(
            f"Redis namespace {namespace!r} has key layout version {version}, newer than "
            f"this exqueue's {LAYOUT_VERSION}: it was written by a newer exqueue. Upgrade "
            f"exqueue on this machine to the version the other nodes run, or use another "
            f"namespace; nothing was changed"
        )
    raise SchemaVersionError(
        f"Redis namespace {namespace!r} has an unknown key layout version {found!r} "
        f"(this exqueue uses {LAYOUT_VERSION}); it was not written by exqueue: use "
        f"another namespace, or delete its keys if they are no longer needed"
    )


def _version(found: bytes | None) -> int | None:
    try:
        return int(found) if found is not None and found.isdigit() else None
    except ValueError:
        return None


def _upgrade(
    client: Any, prefix: str, namespace: str, run: Callable[..., Any], version: int, wait: float
) -> None:
    lock = prefix + "upgrade:lock"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while True:
        if client.set(lock, token, nx=True, px=LOCK_MS):
            try:
                note = (
                    f"{version}->{LAYOUT_VERSION} at {time.time():.3f} by "
                    f"{socket.gethostname()}:{os.getpid()}"
                )
                run("UPGRADE", str(version), str(LAYOUT_VERSION), note)
            finally:
                client.eval(_RELEASE, 1, lock, token)
            # Whoever upgraded (this call or one before it), the layout must now be ours.
            found = client.get(prefix + "schema")
            if _version(found) != LAYOUT_VERSION:
                raise SchemaVersionError(
                    f"Redis namespace {namespace!r} has key layout version {found!r} after "
                    f"the upgrade to {LAYOUT_VERSION}; another exqueue changed it meanwhile"
                )
            return
        # Another process holds the lock: wait for its upgrade to land.
        if _version(client.get(prefix + "schema")) == LAYOUT_VERSION:
            return
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"Redis namespace {namespace!r} is being upgraded to key layout "
                f"{LAYOUT_VERSION} by another process, which has not finished in {wait:.0f} s; "
                f"try again, or delete {lock!r} if no exqueue process is running"
            )
        time.sleep(0.05)
