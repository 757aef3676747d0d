"""Peer adapters: one module per library, each a :class:`benchmarks.common.Adapter`."""

from __future__ import annotations

import importlib
import sys

from benchmarks.common import Adapter

_MODULES = [
    "huey_bench",
    "rq_bench",
    "dramatiq_bench",
    "saq_bench",
    "celery_bench",
    "procrastinate_bench",
    "arq_bench",
]


#: Library name -> why its adapter could not be loaded here.
MISSING: dict[str, str] = {}


def _load() -> list[type[Adapter]]:
    found = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"benchmarks.peers.{name}")
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            MISSING[name.removesuffix("_bench")] = str(exc)
            continue
        found.append(module.ADAPTER)
    return found


PEERS = _load()
