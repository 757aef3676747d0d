"""procrastinate on PostgreSQL: ``procrastinate worker`` with concurrency N (asyncio).

It runs in the benchmark's own database; the schema is applied once. Batch
enqueue is ``Task.batch_defer`` (one INSERT).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from procrastinate import App, PsycopgConnector

from benchmarks import bodies, common

app = App(connector=PsycopgConnector(conninfo=common.PG_DSN))


@app.task(name="bench.noop", queue="exqbench")
async def noop(n: int) -> None:
    await bodies.arun(n)


class ProcrastinateAdapter(common.Adapter):
    library = "procrastinate"
    backend = "postgres"
    batch = True
    notes = "batch_defer is one INSERT"

    def setup(self) -> None:
        with psycopg.connect(common.PG_DSN, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        self.ctx = app.open()
        self.ctx.__enter__()
        if not exists or exists[0] is None:
            app.schema_manager.apply_schema()
        self.clear()

    def clear(self) -> None:
        with psycopg.connect(common.PG_DSN, autocommit=True) as conn:
            conn.execute("TRUNCATE procrastinate_jobs CASCADE")

    def enqueue_one(self, n: int) -> None:
        noop.defer(n=n)

    def enqueue_batch(self, ns: Sequence[int]) -> None:
        noop.batch_defer(*({"n": n} for n in ns))

    def teardown(self) -> None:
        self.clear()
        self.ctx.__exit__(None, None, None)


ADAPTER = ProcrastinateAdapter
