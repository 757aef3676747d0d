"""The benchmark harness compares like with like: one process per library, its own
command, the same concurrency and body in every cell, ratios only within a cell.

These check the configuration the harness builds and the pairing of its ratio
table, without running any worker (no timing, no services needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cpu, matrix, run
from benchmarks.matrix import ENV_BODY, ENV_CONCURRENCY, Config

#: The command each library's own documentation tells a user to start a worker with.
OWN_COMMAND = {
    "exqueue": "exqueue",
    "huey": "huey_consumer",
    "dramatiq": "dramatiq",
    "celery": "celery",
    "rq": "rq",
    "saq": "saq",
    "arq": "arq",
    "procrastinate": "procrastinate",
}


def cells(configs: list[Config]) -> dict[tuple[int, str], list[Config]]:
    grouped: dict[tuple[int, str], list[Config]] = {}
    for cfg in configs:
        grouped.setdefault((cfg.concurrency, cfg.body), []).append(cfg)
    return grouped


def test_every_cell_holds_every_library_run_or_refused_with_a_reason() -> None:
    configs = matrix.build()
    grouped = cells(configs)
    assert set(grouped) == {(c, b) for c in matrix.CONCURRENCIES for b in matrix.BODIES}
    for cell, members in grouped.items():
        assert [m.library.key for m in members] == list(matrix.BY_KEY), cell
        for m in members:
            assert m.skip is None or len(m.skip) > 20, (cell, m.library.key)
    # Every peer library and the floor can run every concurrency but RQ's.
    refused = {(m.library.key, m.concurrency) for m in configs if m.skip}
    assert refused == {("rq-redis", c) for c in (4, 64, 256)}


def test_every_library_is_its_own_process_command_with_the_cells_concurrency_and_body() -> None:
    for cfg in matrix.build():
        if cfg.skip:
            continue
        lib, argv, env = cfg.library, cfg.argv, cfg.env(500)
        assert env[ENV_CONCURRENCY] == str(cfg.concurrency)
        assert env[ENV_BODY] == cfg.body
        if lib.floor or lib.reference:
            module = "benchmarks.plain" if lib.floor else "benchmarks.bare"
            assert argv[:3] == [sys.executable, "-m", module]
            continue
        assert os.path.basename(argv[0]) == OWN_COMMAND[lib.library], argv
        assert os.path.dirname(argv[0]) == os.path.dirname(sys.executable)
        if lib.flag is not None:
            at = argv.index(lib.flag)
            assert argv[at + 1] == str(cfg.concurrency), argv
        assert not any("{" in a for a in argv), argv


def test_one_worker_process_each() -> None:
    for cfg in matrix.build(concurrencies=(64,), bodies=("incr",)):
        argv = cfg.argv
        if cfg.library.library == "exqueue":
            assert argv[1:2] == ["worker"] and argv[argv.index("--processes") + 1] == "1"
        if cfg.library.library == "dramatiq":
            assert argv[argv.index("-p") + 1] == "1"
        if cfg.library.library == "celery":
            assert argv[argv.index("-P") + 1] == "threads"
        if cfg.library.library == "huey":
            assert argv[argv.index("-k") + 1] == "thread"


def test_the_exqueue_app_runs_the_concurrency_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import exq_app

    monkeypatch.setenv("EXQ_BENCH_URL", "memory://")
    monkeypatch.setenv(ENV_CONCURRENCY, "64")
    queue = exq_app._from_env()
    assert queue is not None
    assert queue.workers[exq_app.JOB].concurrency == 64


def test_bad_selections_are_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown bodies"):
        matrix.build(bodies=("noop", "fib"))
    with pytest.raises(ValueError, match="known: exqueue-redis"):
        matrix.build(keys=["exqueue-redis", "huey"])
    with pytest.raises(ValueError, match="at least 1"):
        matrix.build(concurrencies=(0,))
    with pytest.raises(SystemExit):
        run.main(["--concurrency", "4,x"])


def test_the_sleep_body_runs_a_fixed_number_of_rounds_per_slot() -> None:
    (c1, c64) = matrix.build(keys=["exqueue-redis"], concurrencies=(1, 64), bodies=("sleep",))
    assert matrix.jobs_for(c1, 10_000, 100) == 100
    assert matrix.jobs_for(c64, 10_000, 100) == 6_400
    assert c64.limit() == 6_400
    (incr,) = matrix.build(keys=["exqueue-redis"], concurrencies=(64,), bodies=("incr",))
    assert matrix.jobs_for(incr, 10_000, 100) == 10_000 and incr.limit() is None


def fake(rate: float, cpu_per_1000: float) -> dict[str, object]:
    return {
        "runs": 1,
        "rate": {"median": rate, "min": rate, "max": rate},
        "cpu_per_1000": {"median": cpu_per_1000, "min": cpu_per_1000, "max": cpu_per_1000},
    }


def test_ratios_pair_only_the_same_backend_concurrency_and_body() -> None:
    keys = ["exqueue-redis", "exqueue-postgres", "huey-redis", "rq-redis"]
    keys += ["procrastinate-postgres", "floor-threads"]
    configs = matrix.build(keys, concurrencies=(1, 4), bodies=("incr",))
    results = {}
    for i, cfg in enumerate(configs):
        if not cfg.skip:
            results[(cfg.library.key, cfg.concurrency, cfg.body)] = fake(100.0 * (i + 1), 1.0)
    notes = run.Notes()
    rows = run.ratio_rows(configs, results, notes)
    pairs = {(r[0], r[2]) for r in rows}
    assert pairs == {
        (c, f"exqueue-{b} / {p}")
        for c in ("1", "4")
        for b, p in [
            ("redis", "huey-redis"),
            ("redis", "rq-redis"),
            ("redis", "floor-threads"),
            ("postgres", "procrastinate-postgres"),
            ("postgres", "floor-threads"),
        ]
    }
    for c, _, name, ratio, _cpu in rows:
        ours, peer = name.split(" / ")
        if peer == "rq-redis" and c == "4":
            assert ratio == "— [1]" and notes.reasons[0].startswith("RQ runs one job at a time")
            continue
        a = results[(ours, int(c), "incr")]["rate"]["median"]  # type: ignore[index]
        b = results[(peer, int(c), "incr")]["rate"]["median"]  # type: ignore[index]
        assert ratio == (f"{a / b:.0%}" if peer == "floor-threads" else f"{a / b:.2f}×")


def test_a_bare_bound_is_a_share_for_exqueue_and_a_ratio_over_the_peers() -> None:
    keys = ["exqueue-redis", "exqueue-redis-asyncio", "exqueue-postgres", "huey-redis"]
    keys += ["bare-redis", "bare-redis-asyncio", "bare-postgres", "floor-threads"]
    configs = matrix.build(keys, concurrencies=(4,), bodies=("incr",))
    results = {
        (cfg.library.key, cfg.concurrency, cfg.body): fake(100.0 * (i + 1), 1.0 + i)
        for i, cfg in enumerate(configs)
    }
    rows = run.ratio_rows(configs, results, run.Notes())
    named = {r[2]: r[3] for r in rows}
    # Each bound pairs with its own backend only; exqueue's share of it is a percentage.
    assert {n for n in named if n.startswith("exqueue-") and "bare" in n} == {
        "exqueue-redis / bare-redis",
        "exqueue-redis-asyncio / bare-redis-asyncio",
        "exqueue-postgres / bare-postgres",
    }
    # A bound is compared with the peers of its store and the floors, never with exqueue.
    assert {n for n in named if n.startswith("bare-")} == {
        "bare-redis / huey-redis",
        "bare-redis / floor-threads",
        "bare-redis-asyncio / huey-redis",
        "bare-redis-asyncio / floor-threads",
        "bare-postgres / floor-threads",
    }

    def rate(key: str) -> float:
        return results[(key, 4, "incr")]["rate"]["median"]  # type: ignore[index]

    assert (
        named["exqueue-redis / bare-redis"] == f"{rate('exqueue-redis') / rate('bare-redis'):.0%}"
    )
    assert named["bare-redis / huey-redis"] == f"{rate('bare-redis') / rate('huey-redis'):.2f}×"


def test_cpu_counts_the_worker_and_its_children(tmp_path: Path) -> None:
    # A shell (the "worker") whose child burns CPU: the child's time is the worker's cost.
    (tmp_path / "burn.py").write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    )
    script = tmp_path / "w.sh"
    script.write_text(f"{sys.executable} {tmp_path / 'burn.py'}\nsleep 30\n")
    proc = subprocess.Popen(["sh", str(script)])
    try:
        deadline = time.monotonic() + 30
        while cpu.seconds(proc.pid) < 0.25:
            assert time.monotonic() < deadline, "the child's CPU was never counted"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
