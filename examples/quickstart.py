"""The exqueue demo: one job retried then succeeding, one job ending dead.

Runs on the embedded default storage, the SQLite file ./exqueue.db, so the dead
job is still there afterwards for ``exqueue jobs --state dead``.

    python examples/quickstart.py
"""

from __future__ import annotations

import logging
import time

import exqueue

queue = exqueue.Queue()  # SQLite file ./exqueue.db


@queue.worker(name="demo.fetch_invoice", max_retries=3, backoff=exqueue.Fixed(0.5))
def fetch_invoice(invoice_id: int) -> None:
    """Fails on its first two attempts (a flaky network), then succeeds."""
    job = exqueue.current_job()
    assert job is not None
    if job.attempt < 3:
        raise ConnectionError(f"invoice service timed out (attempt {job.attempt})")
    print(f"  fetched invoice {invoice_id} on attempt {job.attempt}")


@queue.worker(name="demo.send_report", max_retries=2, backoff=exqueue.Exponential(0.2, 2))
def send_report(address: str) -> None:
    """Always fails: after 3 attempts it is dead and kept for a person to look at."""
    raise ValueError(f"mailbox {address!r} does not exist")


@queue.on_dead
def report(job: exqueue.Job, exc: BaseException | None) -> None:
    print(f"  on_dead: {job.worker} {job.id} died after {job.attempt} attempts: {exc!r}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="  log %(levelname)s: %(message)s")
    fetch_id = fetch_invoice.enqueue(1001)
    report_id = send_report.enqueue("nobody@example.invalid")
    print(f"enqueued {fetch_id} (fetch_invoice) and {report_id} (send_report)")

    # drain() runs what is runnable now; retries wait out their backoff first.
    while any(
        (job := queue.get(job_id)) is not None and job.state != "dead"
        for job_id in (fetch_id, report_id)
    ):
        queue.drain()
        time.sleep(0.1)

    print(f"fetch_invoice job removed after success: {queue.get(fetch_id) is None}")
    dead = queue.get(report_id)
    assert dead is not None
    print(f"send_report job is {dead.state} after {dead.attempt} attempts; last error:")
    print(f"  {dead.last_error.splitlines()[-1] if dead.last_error else ''}")
    print("\nSee it, re-queue it or delete it from the command line:")
    print("  exqueue jobs --state dead")
    print(f"  exqueue retry {report_id}")
    print(f"  exqueue delete {report_id}")


if __name__ == "__main__":
    main()
