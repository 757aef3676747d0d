"""One run for ``benchmarks.instructions``, with ``PYTHONPATH`` at one version's tree.

The same workload as ``versions_child.py`` (same worker, same store set-up, the
public API both versions share), but only the phases asked for, in order:
``enqueue`` (one by one), ``enqueue_many`` (batches of 500), ``drain``.
"""

from __future__ import annotations

import json
import sys
import tempfile

from versions_child import noop, open_storage  # this script's directory is on sys.path

import exqueue
from exqueue.job import Call


def main() -> None:
    spec = json.loads(sys.argv[1])
    jobs = int(spec["jobs"])
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(spec["url"], tmp)
        queue = exqueue.Queue(storage, check_clock=False)
        job = queue.worker(
            name="bench.versions", concurrency=int(spec.get("concurrency", 8)), max_retries=0
        )(noop)
        try:
            for phase in spec["phases"].split(","):
                if phase == "enqueue":
                    for n in range(jobs):
                        job.enqueue(n)
                elif phase == "enqueue_many":
                    for low in range(0, jobs, 500):
                        calls = [Call(job.name, (n,)) for n in range(low, min(jobs, low + 500))]
                        queue.enqueue_many(calls)
                elif phase == "drain":
                    ran = queue.drain(timeout=600)
                    if ran != jobs:
                        raise SystemExit(f"drained {ran} jobs, expected {jobs}")
        finally:
            if hasattr(storage, "destroy"):
                storage.destroy()
            queue.close()


if __name__ == "__main__":
    main()
