"""Prometheus metrics: counters, histograms and cached storage gauges, scraped over real HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import exqueue
from exqueue.prometheus import PrometheusMiddleware, serve
from tests.support.clock import FakeClock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_are_served_over_http(storage: exqueue.Storage) -> None:
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock)
    registry = CollectorRegistry()
    metrics = PrometheusMiddleware(queue, registry=registry, cache_seconds=3600)
    queue.add_middleware(metrics)

    @queue.worker(name="prom.ok")
    def ok() -> None: ...

    @queue.worker(name="prom.bad", max_retries=1, backoff=exqueue.Fixed(5))
    def bad() -> None:
        raise ValueError("no")

    for _ in range(3):
        ok.enqueue()
    bad.enqueue()
    ok.enqueue_in(100)
    clock.advance(2)  # the three runnable jobs waited 2 s
    queue.drain()
    clock.advance(10)
    queue.drain()
    port = free_port()
    serve(port, registry, addr="127.0.0.1")
    seen = scrape(port)
    w = (("worker", "prom.ok"),)
    b = (("worker", "prom.bad"),)
    assert seen[("exqueue_jobs_enqueued_total", w)] == 4
    assert seen[("exqueue_jobs_succeeded_total", w)] == 3
    assert seen[("exqueue_jobs_failed_total", b)] == 2
    assert seen[("exqueue_jobs_retried_total", b)] == 1
    assert seen[("exqueue_jobs_dead_total", b)] == 1
    assert seen[("exqueue_job_duration_seconds_count", w)] == 3
    assert seen[("exqueue_job_duration_seconds_count", b)] == 2
    # Waited 2 s before the first drain: above the 1 s bucket, within 5 s.
    assert seen[("exqueue_job_queue_latency_seconds_bucket", (("le", "1.0"), *w))] == 0
    assert seen[("exqueue_job_queue_latency_seconds_bucket", (("le", "5.0"), *w))] == 3
    dead = (("state", "dead"), ("worker", "prom.bad"))
    assert seen[("exqueue_jobs", dead)] == 1
    # Gauges are cached: a job added now is not seen until the cache expires.
    bad.enqueue()
    assert scrape(port)[("exqueue_jobs", (("state", "waiting"), ("worker", "prom.bad")))] == 0
    metrics.gauges.cache_seconds = 0  # type: ignore[union-attr]
    assert scrape(port)[("exqueue_jobs", (("state", "waiting"), ("worker", "prom.bad")))] == 1


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(exqueue.ConfigurationError, match=f"port {port}.*--metrics-port"):
            serve(port, CollectorRegistry(), addr="127.0.0.1")


def test_a_failing_store_serves_the_last_gauges() -> None:
    queue = exqueue.Queue("memory://")
    registry = CollectorRegistry()
    metrics = PrometheusMiddleware(queue, registry=registry, cache_seconds=0)
    assert metrics.gauges is not None
    queue.worker(name="prom.g")(lambda: None).enqueue()
    first = list(metrics.gauges.collect())[0].samples
    queue.storage.counts = None  # type: ignore[assignment,method-assign]
    assert list(metrics.gauges.collect())[0].samples == first
