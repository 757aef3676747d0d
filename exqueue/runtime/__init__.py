"""The worker runtime, in rooms: a node's lifecycle and threads (:mod:`.core`),
lanes and claiming (:mod:`.lanes`), acknowledgement (:mod:`.acks`), heartbeat
and recovery (:mod:`.leases`), signals (:mod:`.signals`), and what the queue
gives a runtime (:mod:`.config`). Retry decisions are in :mod:`exqueue.policy`.
"""

from exqueue.runtime.acks import MAX_ERROR_CHARS, format_error
from exqueue.runtime.config import NodeConfig
from exqueue.runtime.core import MIN_POLL, Runtime
from exqueue.runtime.lanes import BUFFER_SECONDS
from exqueue.runtime.signals import run_until_signal

__all__ = [
    "BUFFER_SECONDS",
    "MAX_ERROR_CHARS",
    "MIN_POLL",
    "NodeConfig",
    "Runtime",
    "format_error",
    "run_until_signal",
]
