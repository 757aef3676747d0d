"""The enqueue and latency figures exqueue must reach on each backend (issue #7), and the
check against them. Throughput with jobs running is compared like for like with the
peers and the no-queue floor by ``python -m benchmarks.run`` (issue #19)."""

from __future__ import annotations

# metric -> (target, higher is better)
TARGETS: dict[str, dict[str, float]] = {
    "redis": {"enqueue": 15_000, "batch": 100_000, "p50": 0.5, "p99": 2.0},
    "postgres": {"enqueue": 3_000, "batch": 50_000, "p50": 2.0, "p99": 5.0},
    "mariadb": {"enqueue": 2_000, "batch": 30_000},
    "sqlite": {"enqueue": 5_000, "batch": 100_000},
    "memory": {"enqueue": 100_000, "p50": 0.2},
}
LOWER_IS_BETTER = {"p50", "p99"}


def misses(backend: str, figures: dict[str, float | None]) -> list[str]:
    """The metrics of ``figures`` that miss their target (a missing figure misses)."""
    missed = []
    for metric, target in TARGETS.get(backend, {}).items():
        value = figures.get(metric)
        if value is None:
            missed.append(metric)
        elif metric in LOWER_IS_BETTER and value > target:
            missed.append(metric)
        elif metric not in LOWER_IS_BETTER and value < target:
            missed.append(metric)
    return missed


def verdict(backend: str, figures: dict[str, float | None]) -> str:
    if backend not in TARGETS:
        return ""
    missed = misses(backend, figures)
    return "yes" if not missed else "no: " + ", ".join(missed)
