"""RedisStorage's wake-up signal (capability ``WAKEUP``): ``wait_for_jobs`` over pub/sub.

Each waiting thread keeps a subscription to ``{ns}:wake`` of its own; a wait
arms ``{ns}:armed``, and the next transition that makes a job runnable deletes
that key and publishes once (see the scripts' ``signal``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from redis.exceptions import OutOfMemoryError

from exqueue_redis._client import quietly_close

#: Longest a blocked ``wait_for_jobs`` goes without checking whether the storage closed.
_WAIT_SLICE = 0.2


class RedisWakeup:
    """The ``wait_for_jobs`` of ``RedisStorage`` (a base class of it)."""

    _prefix: str
    _client: Any
    _closed: bool
    _local: threading.local
    _pubsubs: dict[Any, bool]
    _pubsubs_lock: threading.Lock

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when a job was made runnable.

        The first wait of a thread subscribes it to ``{ns}:wake``; then the
        thread arms ``{ns}:armed``, and the next transition that makes a job
        runnable (on any node) deletes that key and publishes once. The thread
        stays subscribed. A wait that times out re-arms before it returns; one
        that was woken returns at once and the next wait re-arms and returns
        True without waiting, so a transition made between two waits counts for
        the next one: a loop of waits misses nothing. ``close()`` ends a wait
        early.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        pubsub = self._checkout_pubsub()
        if pubsub is None:
            return False
        broken = False
        try:
            if not getattr(self._local, "listening", False):
                if not self._subscribe(pubsub, deadline):
                    return False
                self._local.listening = True
                self._local.rearm = False
                if not self._arm():
                    return self._poll(pubsub, deadline)
            elif self._local.rearm:
                # The last wait returned before re-arming, so transitions since
                # then announced nothing: arm, and report them as a possible one.
                self._local.rearm = False
                if not self._arm():
                    return self._poll(pubsub, deadline)
                return True
            woke = self._next_wake(pubsub, deadline)
            if woke:
                # One wake-up per burst: what else is queued is the same news.
                while pubsub.get_message(timeout=0) is not None:
                    pass
                # Re-armed by the next wait, not now: the caller claims a round
                # trip sooner.
                self._local.rearm = True
                return True
            if not self._arm():
                self._local.rearm = True
            return False
        except Exception:
            # A broken subscription is thrown away; the next wait starts afresh.
            # After close() the connection may be torn down under us (redis-py
            # then raises ValueError or OSError too): that just ends the wait.
            broken = True
            if self._closed:
                return False
            raise
        finally:
            self._checkin_pubsub(pubsub, broken)

    def _subscribe(self, pubsub: Any, deadline: float) -> bool:
        pubsub.subscribe(self._prefix + "wake")
        while True:
            message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
            if message is None:
                return False
            if message["type"] == "subscribe":
                return True

    def _arm(self) -> bool:
        """Subscribed first, armed second: any later transition publishes to us.

        False on a Redis at maxmemory, which refuses the write: then the caller
        polls (reports a possible job after each wait) until memory is freed.
        """
        try:
            self._client.set(self._prefix + "armed", b"1")
        except OutOfMemoryError:
            return False
        return True

    def _poll(self, pubsub: Any, deadline: float) -> bool:
        """Unarmed (Redis is full): wait out the timeout, then report a possible job."""
        self._next_wake(pubsub, deadline)
        self._local.rearm = True
        return True

    def _next_wake(self, pubsub: Any, deadline: float) -> bool:
        while not self._closed:
            left = deadline - time.monotonic()
            message = pubsub.get_message(timeout=min(max(left, 0.0), _WAIT_SLICE))
            if message is not None and message["type"] == "message":
                return True
            if left <= 0:
                return False
        return False

    def _checkout_pubsub(self) -> Any:
        # One subscription per thread (a PubSub object is not thread-safe), kept
        # between waits. Those in use are closed by their own thread after close().
        with self._pubsubs_lock:
            if self._closed:
                return None
            pubsub = getattr(self._local, "pubsub", None)
            if pubsub is None:
                pubsub = self._local.pubsub = self._client.pubsub()
            self._pubsubs[pubsub] = True
            return pubsub

    def _checkin_pubsub(self, pubsub: Any, broken: bool) -> None:
        with self._pubsubs_lock:
            if not (broken or self._closed):
                self._pubsubs[pubsub] = False
                return
            self._pubsubs.pop(pubsub, None)
            self._local.pubsub = None
            self._local.listening = False
            self._local.rearm = False
        quietly_close(pubsub)
