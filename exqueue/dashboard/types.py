"""What the overview says of a worker type beyond its counts.

A dashboard holds only the storage URL, so it learns a type's settings from the
live nodes, which publish them with each heartbeat (``NodeInfo.types``). Nodes
running different code may publish different settings for one type: each
distinct one is shown with the nodes that publish it, and the type is marked
serial when any of them says so (a serial node takes only the type's head, so
the head can block it). A type no live node publishes is shown as unknown
rather than guessed, and only a serial type's oldest job is presented as its
blocking head: a plain type runs its jobs in any order the claims choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exqueue.storage import DEAD, RUNNING, JobRecord, NodeInfo, TypeSettings


@dataclass(frozen=True)
class Published:
    """One distinct set of settings of a type and the live nodes publishing it."""

    settings: TypeSettings
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class TypeView:
    """A worker type as the live nodes describe it.

    ``published``: each distinct setting (empty: no live node publishes the type);
    ``silent``: live nodes running the type that publish no settings (an exqueue
    from before they were published).
    """

    name: str
    published: tuple[Published, ...] = ()
    silent: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return bool(self.published)

    @property
    def serial(self) -> bool:
        return any(p.settings.serial for p in self.published)

    @property
    def disagree(self) -> bool:
        return len(self.published) > 1


def views(nodes: Sequence[NodeInfo] | None, names: Sequence[str]) -> dict[str, TypeView]:
    """A view of each type of ``names`` and of every type a live node runs, by name."""
    found: dict[str, dict[TypeSettings, list[str]]] = {name: {} for name in names}
    silent: dict[str, list[str]] = {}
    for node in nodes or ():
        for name, settings in node.types.items():
            found.setdefault(name, {}).setdefault(settings, []).append(node.name)
        for name in node.workers:
            if name not in node.types:
                found.setdefault(name, {})
                silent.setdefault(name, []).append(node.name)
    return {
        name: TypeView(
            name,
            tuple(Published(s, tuple(on)) for s, on in by_settings.items()),
            tuple(silent.get(name, ())),
        )
        for name, by_settings in sorted(found.items())
    }


def _seconds(value: float) -> str:
    return f"{value:g} s"


def describe(settings: TypeSettings) -> list[str]:
    """The settings as short phrases, the limits first."""
    s = settings
    parts = ["serial (one at a time, in order)" if s.serial else f"{s.concurrency} per node"]
    if s.global_limit is not None:
        where = " per partition" if s.partitioned else " in the cluster"
        parts.append(f"at most {s.global_limit} running{where}")
    elif s.partitioned:
        parts.append("partitioned")
    if s.rate is not None and s.per is not None:
        parts.append(
            f"rate {s.rate} per {_seconds(s.per)}" + (" per partition" if s.partitioned else "")
        )
    if s.timeout is not None:
        parts.append(f"timeout {_seconds(s.timeout)}")
    parts.append(f"{s.max_attempts} attempt{'' if s.max_attempts == 1 else 's'}")
    if s.backoff:
        parts.append(f"backoff {s.backoff}")
    parts.append("async" if s.is_async else "sync")
    return parts


@dataclass(frozen=True)
class Head:
    """A serial type's oldest job and what it means for the type: ``kind`` is a badge
    class, ``label`` the job's state in words, ``effect`` what the type does meanwhile."""

    record: JobRecord
    kind: str
    label: str
    effect: str


def head(record: JobRecord, now: float) -> Head:
    """What a serial type's head job means for the type at ``now``."""
    if record.state == RUNNING:
        return Head(record, "running", "running", "the type waits for it to finish")
    if record.state == DEAD:
        return Head(record, "dead", "dead", "blocks the type until it is retried or deleted")
    if record.run_at > now:
        label = "scheduled for retry" if record.attempt > 0 else "scheduled"
        return Head(record, "scheduled", label, "the type waits until it is due")
    return Head(record, "waiting", "waiting", "runs next")
