"""Redis server instructions per job of the claim and completion scripts, trees side by side.

    python -m benchmarks.redisinstr --tree base=/tmp/base --tree now=. [--jobs 1200]
        [--batches 1,8,400] [--scope script|all] [--tree bound=bare]

Wall and CPU time of a shared machine are noisy; the instructions a redis-server
executes are not. For each tree (a directory holding ``exqueue`` and
``exqueue_redis``), a private redis-server runs under ``valgrind --tool=callgrind``
and a child process (``PYTHONPATH`` = the tree) enqueues ``--jobs`` jobs, claims
them ``batch`` at a time, then completes them in the same batches (``complete``
for a batch of 1, ``complete_many`` otherwise), once per ``--batches`` entry.
Where the tree has ``finish_and_claim``, ``finish-1`` is a job thread's loop at
concurrency 1: each success and the next claim of one in one call (compare it
with ``claim-1`` + ``complete-1``).
The server's counts are dumped after each phase (``callgrind_control --dump``),
so each figure is that phase's instructions divided by its jobs.

The tree ``bare`` (``--tree bound=bare``) counts the bare bound's scripts
(``benchmarks.bare.ScriptStore``) behind the same calls, for a figure of exqueue's
against the least a store with its promise can do.

``--scope script`` (the default) counts only inside ``evalShaCommand`` (the Lua
scripts and the commands they call); ``--scope all`` counts everything the server
does in the phase, reading and writing the sockets included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from tests.support.redis_servers import free_port, require_binaries

CHILD = r"""
import json, subprocess, sys
from exqueue.storage import NewJob
from exqueue_redis import RedisStorage
spec = json.loads(sys.argv[1])
def dump(label):
    subprocess.run(['callgrind_control', '--dump=' + label, str(spec['pid'])],
                   check=True, capture_output=True)
if spec.get('bare'):  # the bound's scripts (benchmarks.bare), behind the same calls
    from benchmarks.bare import ScriptStore as RedisStorage
storage = RedisStorage(spec['url'], namespace='instr')
jobs = spec['jobs']
# A payload of the usual shape and size, and a meta-less job: the common case.
payload = b'[["https://example.com/item/12345"], {"retries": 3}]'
for batch in spec['batches']:
    for start in range(0, jobs, 100):
        storage.enqueue([NewJob(f'j{batch}-{n}', 'w', payload, 1.0, 1.0, 3)
                         for n in range(start, min(start + 100, jobs))])
    dump(f'enqueue-{batch}')
    held = []
    owner = 'node-0123456789abcdef'
    while rows := storage.claim('w', batch, now=2.0, owner=owner, token='t' * 32,
                                lease_until=1e9):
        held.append([(r.id, 't' * 32) for r in rows])
    dump(f'claim-{batch}')
    for pairs in held:
        if batch == 1:
            assert storage.complete(pairs[0][0], pairs[0][1], now=3.0)
        else:
            assert len(storage.complete_many(pairs, now=3.0)) == len(pairs)
    dump(f'complete-{batch}')
    assert sum(len(p) for p in held) == jobs, 'every job claimed once'
if hasattr(storage, 'finish_and_claim'):
    # A job thread at concurrency 1: each success and the next claim in one call.
    from exqueue.storage import FinishAndClaim
    for start in range(0, jobs, 100):
        storage.enqueue([NewJob(f'f-{n}', 'w', payload, 1.0, 1.0, 3)
                         for n in range(start, min(start + 100, jobs))])
    rows = storage.claim('w', 1, now=2.0, owner=owner, token='t' * 32, lease_until=1e9)
    dump('first')
    finished = 0
    while rows:
        out = storage.finish_and_claim(FinishAndClaim(
            [(rows[0].id, 't' * 32)], 'w', 1, 3.0, owner, 't' * 32, 1e9))
        assert out.completed == [rows[0].id]
        finished += 1
        rows = out.claimed
    dump('finish-1')
    assert finished == jobs, 'every job finished once'
storage.close()
"""


def totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    return 0


def run_tree(tree: str, jobs: int, batches: list[int], scope: str) -> dict[str, float]:
    """Per-job instructions of each phase for ``tree``; the literal tree ``bare`` runs
    the bare bound's scripts (``benchmarks.bare.ScriptStore``) from this checkout."""
    bare = tree == "bare"
    if bare:
        tree = str(Path(__file__).resolve().parents[1])
    server, _ = require_binaries()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="exq-rinstr-") as tmp:
        if os.environ.get("EXQ_RINSTR_KEEP"):  # keep the dumps for callgrind_annotate
            tmp = tempfile.mkdtemp(prefix="exq-rinstr-keep-")
        out = Path(tmp) / "cg.out"
        toggle = ["--collect-atstart=no", "--toggle-collect=evalShaCommand"]
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            *(toggle if scope == "script" else []),
            server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", tmp,
        ]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import redis

            client = redis.Redis(port=port)
            for _ in range(600):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            spec = {"url": f"redis://127.0.0.1:{port}/0", "pid": proc.pid,
                    "jobs": jobs, "batches": batches, "bare": bare}  # fmt: skip
            if scope == "all":
                subprocess.run(
                    ["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True
                )
            env = {**os.environ, "PYTHONPATH": tree, "PYTHONHASHSEED": "0"}
            subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(spec)], env=env, check=True, cwd=tree
            )
        finally:
            proc.terminate()
            proc.wait(60)
        found = {}
        for dump in sorted(Path(tmp).glob("cg.out.*")):
            text = dump.read_text(errors="replace")
            trigger = "desc: Trigger: dump"
            label = next((ln.split()[-1] for ln in text.splitlines() if ln.startswith(trigger)), "")
            if label.startswith(("claim-", "complete-", "finish-")):
                found[label] = totals(dump) / jobs
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="name=path")
    parser.add_argument("--jobs", type=int, default=1200)
    parser.add_argument("--batches", default="1,8,400")
    parser.add_argument("--scope", choices=("script", "all"), default="script")
    options = parser.parse_args()
    batches = [int(b) for b in options.batches.split(",")]
    results = {}
    for spec in options.tree:
        name, path = spec.split("=", 1)
        where = path if path == "bare" else str(Path(path).resolve())
        results[name] = run_tree(where, options.jobs, batches, options.scope)
    labels = [f"{kind}-{b}" for b in batches for kind in ("claim", "complete")]
    names = list(results)
    if any("finish-1" in found for found in results.values()):
        # Against claim-1 + complete-1: the same work in one script (FINISH_AND_CLAIM).
        labels.append("finish-1")

    def cell(found: dict[str, float], label: str) -> str:
        return f"{found[label]:,.0f}" if label in found else "—"  # a phase the tree lacks

    rows = [[label, *(cell(results[n], label) for n in names)] for label in labels]
    print(f"server instructions per job ({options.scope}), {options.jobs} jobs per phase")
    print(tabulate(rows, headers=["phase", *names]))


if __name__ == "__main__":
    main()
