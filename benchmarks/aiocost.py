"""Where an async job's CPU goes on Redis: the worker's threads, the server, the loop alone.

    python -m benchmarks.aiocost [--jobs 40000] [--batch 400] [--parts threads,server,loop]

CPU time, not wall time, so the figures hold on a busy machine (wall time on a
shared 2-core box moves 2x between runs); each is per job:

- ``threads``: an async worker type of concurrency 1,000 (the ``sleep`` body)
  started in this process on the benchmark Redis database
  (``$EXQ_BENCH_REDIS_DB``), with ``--jobs`` jobs enqueued first; the CPU of each
  thread (``/proc/self/task``) while they run: the event loop, the claiming
  threads (dispatcher, feeder), the finishers, the acknowledger;
  and where the 1,000 slots are on average (sampled every 10 ms): a job's task
  on the loop, handed over to the loop or finished but not yet freed, claimed
  and buffered, or free (waiting for a claim).
- ``server``: Redis's own CPU (``utime + stime`` of a private redis-server)
  per job claimed and per job completed, ``--batch`` at a time, and this
  process's CPU for the same calls (reading the replies into records).
- ``loop``: one event loop thread alone, no queue, no other thread: the floor's
  shape (1,000 tasks looping the body), a task per job, and a task per job that
  also decodes its payload and sets its job context, as the runtime does.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import MappingProxyType

os.environ.setdefault("EXQ_BENCH_BODY", "sleep")

from benchmarks import bodies, common, counter  # noqa: E402
from benchmarks.exq_app import JOB, make_queue, make_storage  # noqa: E402
from exqueue.codec import JSONCodec  # noqa: E402
from exqueue.job import Call, JobContext, _current  # noqa: E402
from exqueue.storage import NewJob  # noqa: E402
from exqueue_redis import RedisStorage  # noqa: E402

CONCURRENCY = 1000
TICK = os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stat_cpu(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _per_thread() -> dict[str, float]:
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        name = re.sub(r"-\d+$", "", thread.name)  # the two finishers are one row
        try:
            spent = _stat_cpu(f"/proc/self/task/{thread.native_id}/stat")
        except OSError:
            continue  # ended meanwhile
        found[name] = found.get(name, 0.0) + spent
    return found


def threads(jobs: int) -> None:
    os.environ["EXQ_BENCH_ASYNC"] = "1"
    directory = tempfile.mkdtemp(prefix="exqbench-aiocost-")
    counter.reset_in_process(directory)
    common.flush_bench_redis()
    filler = make_queue(make_storage(common.REDIS_URL))
    for start in range(0, jobs, 1000):
        filler.enqueue_many([Call(JOB, (n,), {}) for n in range(start, min(start + 1000, jobs))])
    filler.storage.close()
    queue = make_queue(make_storage(common.REDIS_URL), CONCURRENCY)
    before_all = _cpu()
    queue.start()
    before = _per_thread()
    runtime = queue._runtime
    lanes = list(runtime._lanes.values()) if runtime is not None else []
    runner = runtime._aio if runtime is not None else None
    # Where the slots are, sampled: (tasks on the loop, executing, buffered).
    samples: list[tuple[int, int, int]] = []
    while counter.read(directory).count < jobs:
        samples.append(
            (
                len(runner.running) if runner is not None else 0,
                sum(lane.executing for lane in lanes),
                sum(len(lane.buffer) for lane in lanes),
            )
        )
        time.sleep(0.01)
    after = _per_thread()
    total = _cpu() - before_all
    done = counter.read(directory)
    queue.stop(timeout=10)
    queue.storage.close()
    common.flush_bench_redis()
    rate = jobs / (done.last_end - done.first_start)
    print(f"worker in this process: {rate:,.0f} jobs/s, {total / jobs * 1e6:.1f} µs CPU per job")
    if samples:
        columns = zip(*samples, strict=True)
        running, executing, buffered = (sum(column) / len(samples) for column in columns)
        print(
            f"  slots executing: {executing:.0f} of {CONCURRENCY} on average "
            f"({len(samples)} samples): {running:.0f} running on the loop, "
            f"{executing - running:.0f} handed over or finishing; {buffered:.0f} buffered, "
            f"{CONCURRENCY - executing - buffered:.0f} free (waiting for a claim)"
        )
    for name in sorted(after, key=lambda n: -(after[n] - before.get(n, 0.0))):
        spent = (after[name] - before.get(name, 0.0)) / jobs * 1e6
        if spent > 0:
            print(f"  {name:32s} {spent:5.1f} µs per job")


def server(jobs: int, batch: int) -> None:
    from tests.support.redis_servers import RedisServer

    redis_server = RedisServer(Path(tempfile.mkdtemp(prefix="exqbench-aiocost-")) / "redis").start()
    try:
        assert redis_server.process is not None
        stat = f"/proc/{redis_server.process.pid}/stat"
        storage = RedisStorage(redis_server.url, namespace=f"b{uuid.uuid4().hex[:8]}")
        for start in range(0, jobs, 1000):
            numbers = range(start, min(start + 1000, jobs))
            storage.enqueue([NewJob(f"j-{n}", "w", b"[[1],{}]", 0.0, 0.0, 3) for n in numbers])
        held: list[list[tuple[str, str]]] = []
        server0, client0 = _stat_cpu(stat), time.process_time()
        while True:
            token = uuid.uuid4().hex
            records = storage.claim("w", batch, now=1.0, owner="n", token=token, lease_until=9.0)
            if not records:
                break
            held.append([(record.id, token) for record in records])
        server1, client1 = _stat_cpu(stat), time.process_time()
        for pairs in held:
            storage.complete_many(pairs, now=1.0)
        server2, client2 = _stat_cpu(stat), time.process_time()
        storage.close()
    finally:
        redis_server.kill()
    per = 1e6 / jobs
    print(f"Redis, batches of {batch}, CPU µs per job (server | client):")
    print(f"  claim     {(server1 - server0) * per:5.1f} | {(client1 - client0) * per:5.1f}")
    print(f"  complete  {(server2 - server1) * per:5.1f} | {(client2 - client1) * per:5.1f}")


async def _slots(jobs: int) -> None:
    async def slot(i: int) -> None:
        for n in range(i, jobs, CONCURRENCY):
            await bodies.arun(n)

    await asyncio.gather(*(slot(i) for i in range(CONCURRENCY)))


async def _task_per_job(jobs: int, prepare: bool) -> None:
    loop = asyncio.get_running_loop()
    codec = JSONCodec()
    meta: MappingProxyType[str, str] = MappingProxyType({})
    done = asyncio.Event()
    state = {"started": 0, "left": jobs}

    async def job(n: int) -> None:
        if prepare:
            args, _ = codec.decode(b"[[%d],{}]" % n)
            _current.set(JobContext(f"job-{n}", JOB, 1, 3, meta, 0))
            await bodies.arun(*args)
        else:
            await bodies.arun(n)
        state["left"] -= 1
        if state["started"] < jobs:  # the next job takes the slot, as a claim refills it
            start(state["started"])
        elif not state["left"]:
            done.set()

    def start(n: int) -> None:
        state["started"] += 1
        asyncio.Task(job(n), loop=loop)

    for n in range(CONCURRENCY):
        start(n)
    await done.wait()


def loop(jobs: int) -> None:
    counter.reset_in_process(tempfile.mkdtemp(prefix="exqbench-aiocost-"))
    print("one event loop thread alone, CPU µs per job:")
    shapes = (
        ("floor: 1,000 tasks looping", lambda: _slots(jobs)),
        ("a task per job", lambda: _task_per_job(jobs, False)),
        ("a task per job, decode + context", lambda: _task_per_job(jobs, True)),
    )
    for name, shape in shapes:
        before = _cpu()
        asyncio.run(shape())
        print(f"  {name:34s} {(_cpu() - before) / jobs * 1e6:5.1f}")


def main() -> None:
    parser = common.arguments("benchmarks.aiocost", __doc__)
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--parts", default="threads,server,loop")
    options = parser.parse_args()
    parts = options.parts.split(",")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    if "threads" in parts:
        threads(options.jobs)
    if "server" in parts:
        server(options.jobs, options.batch)
    if "loop" in parts:
        loop(options.jobs)


if __name__ == "__main__":
    main()
