"""Prometheus metrics (``pip install exqueue[prometheus]``), built on the middleware hooks.

``queue.add_middleware(PrometheusMiddleware(queue))`` counts, per worker type:

- ``exqueue_jobs_enqueued_total``, ``exqueue_jobs_succeeded_total``,
  ``exqueue_jobs_failed_total`` (every failed attempt), ``exqueue_jobs_retried_total``
  (failed attempts that will run again), ``exqueue_jobs_dead_total``;
- ``exqueue_job_duration_seconds``: a histogram of attempts' run time;
- ``exqueue_job_queue_latency_seconds``: a histogram of the wait from the
  time a job could run (its ``run_at``: enqueue, or the end of a backoff) to
  the start of the attempt;
- ``exqueue_jobs{worker, state}``: gauges of waiting, scheduled, running and
  dead jobs from the storage's counts, read at most once per ``cache_seconds``
  whatever the scrape rate, so scrapes never hammer the store (a failed read
  serves the last counts).

:func:`serve` starts the HTTP endpoint (``exqueue worker --metrics-port``). Under
``exqueue worker --processes N`` the children write to prometheus_client's
multiprocess files and the supervisor serves one endpoint with their sums
(:func:`serve_children`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exqueue.errors import ConfigurationError
from exqueue.middleware import Middleware
from exqueue.storage import JobRecord, NewJob

if TYPE_CHECKING:
    from exqueue.queue import Queue

__all__ = ["PrometheusMiddleware", "StorageGauges", "serve", "serve_children"]

log = logging.getLogger("exqueue")

#: Run-time buckets: from a millisecond to ten minutes.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600)
#: Queue-latency buckets: from a millisecond to an hour.
LATENCY_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class _Series(NamedTuple):
    enqueued: Any
    succeeded: Any
    failed: Any
    retried: Any
    dead: Any
    duration: Any
    latency: Any


class PrometheusMiddleware(Middleware):
    """Counters and histograms per worker type; with ``queue``, the storage gauges too.

    ``registry`` defaults to prometheus_client's global one (what :func:`serve`
    exposes); ``clock`` must be the queue's (the queue's own is used when given).
    """

    def __init__(
        self,
        queue: Queue | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] | None = None,
        cache_seconds: float = 15.0,
        gauges: bool = True,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.clock = clock or (queue.clock if queue is not None else time.time)
        labels = ["worker"]

        def counter(name: str, text: str) -> Counter:
            return Counter(f"exqueue_jobs_{name}", text, labels, registry=registry)

        self.enqueued_total = counter("enqueued", "Jobs enqueued (duplicates not counted).")
        self.succeeded_total = counter("succeeded", "Attempts that succeeded.")
        self.failed_total = counter("failed", "Attempts that failed (retried or dead).")
        self.retried_total = counter("retried", "Failed attempts that will run again.")
        self.dead_total = counter("dead", "Jobs that died.")
        self.duration = Histogram(
            "exqueue_job_duration_seconds",
            "Run time of an attempt.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "exqueue_job_queue_latency_seconds",
            "From the time a job could run (run_at) to the start of its attempt.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._attempt = threading.local()
        self._series: dict[str, _Series] = {}
        self.gauges: StorageGauges | None = None
        if queue is not None and gauges:
            self.gauges = StorageGauges(queue, cache_seconds)
            registry.register(self.gauges)

    def _of(self, worker: str) -> _Series:
        # ``labels()`` costs a lock and a tuple per call: each worker's series are kept.
        series = self._series.get(worker)
        if series is None:
            series = self._series[worker] = _Series(
                self.enqueued_total.labels(worker),
                self.succeeded_total.labels(worker),
                self.failed_total.labels(worker),
                self.retried_total.labels(worker),
                self.dead_total.labels(worker),
                self.duration.labels(worker),
                self.latency.labels(worker),
            )
        return series

    def enqueued(self, job: NewJob, holder: str) -> None:
        if holder == job.id:
            self._of(job.worker).enqueued.inc()

    def started(self, job: JobRecord) -> None:
        self._of(job.worker).latency.observe(max(self.clock() - job.run_at, 0.0))
        # A death is told without the attempt's run time, on the attempt's thread.
        self._attempt.job, self._attempt.began = job.id, time.monotonic()

    def succeeded(self, job: JobRecord, duration: float) -> None:
        series = self._of(job.worker)
        series.succeeded.inc()
        series.duration.observe(duration)

    def failed(
        self, job: JobRecord, error: BaseException, duration: float, retry_at: float
    ) -> None:
        series = self._of(job.worker)
        series.failed.inc()
        series.retried.inc()
        series.duration.observe(duration)

    def dead(self, job: JobRecord, error: BaseException | None) -> None:
        series = self._of(job.worker)
        if error is not None:  # an attempt that failed; a lost worker's attempt did not end
            series.failed.inc()
            if getattr(self._attempt, "job", None) == job.id:
                series.duration.observe(time.monotonic() - self._attempt.began)
                self._attempt.job = None
        series.dead.inc()

    def timed_out(self, job: JobRecord, duration: float) -> None:
        self._of(job.worker).duration.observe(duration)


class StorageGauges(Collector):
    """``exqueue_jobs{worker, state}`` from ``queue.storage.counts``, cached (see the module)."""

    def __init__(self, queue: Queue, cache_seconds: float = 15.0) -> None:
        self.queue = queue
        self.cache_seconds = cache_seconds
        self.lock = threading.Lock()
        self.read_at = float("-inf")
        self.rows: list[tuple[str, str, int]] = []

    def _rows(self) -> list[tuple[str, str, int]]:
        with self.lock:  # concurrent scrapes share one read
            if time.monotonic() - self.read_at < self.cache_seconds:
                return self.rows
            try:
                counts = self.queue.storage.counts(self.queue.clock())
            except Exception as exc:
                log.warning("reading job counts for the metrics failed (%s); serving the last", exc)
                self.read_at = time.monotonic()
                return self.rows
            self.rows = [
                (worker, state, getattr(row, state))
                for worker, row in sorted(counts.items())
                for state in ("waiting", "scheduled", "running", "dead")
            ]
            self.read_at = time.monotonic()
            return self.rows

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "exqueue_jobs",
            "Jobs in the storage by worker type and state.",
            labels=["worker", "state"],
        )
        for worker, state, value in self._rows():
            family.add_metric([worker, state], value)
        yield family


def serve(port: int, registry: CollectorRegistry | None = None, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` in a daemon thread; a clear error if the port is taken."""
    try:
        start_http_server(port, addr=addr, registry=REGISTRY if registry is None else registry)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on port {port}: {exc.strerror or exc}; is another "
            "worker (or program) using it? Choose another --metrics-port"
        ) from None


def serve_children(port: int, queue: Queue | None, addr: str = "0.0.0.0") -> None:
    """The supervisor's endpoint: the children's multiprocess files summed, plus the
    storage gauges read once here (not once per child)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if queue is not None:
        registry.register(StorageGauges(queue))
    serve(port, registry, addr)
