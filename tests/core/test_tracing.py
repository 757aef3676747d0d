"""Tracing in one process: a broken or slow exporter never holds up jobs; a job whose
meta is full is enqueued without the context."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import exqueue
from exqueue.otel import TracingMiddleware
from exqueue.storage import META_ENTRIES_LIMIT


class BrokenExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)  # a collector that hangs
        raise ConnectionError("collector unreachable")


def test_a_broken_exporter_never_blocks_jobs() -> None:
    exporter = BrokenExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=10))
    queue = exqueue.Queue("memory://", middleware=[TracingMiddleware(provider)])
    ran: list[int] = []

    @queue.worker(name="trace.w", concurrency=4)
    def w(n: int) -> None:
        ran.append(n)

    for n in range(300):
        w.enqueue(n)
    assert queue.drain(timeout=60) == 300
    assert sorted(ran) == list(range(300))
    exporter.release.set()
    provider.shutdown()


def test_a_full_meta_is_enqueued_without_the_context() -> None:
    provider = TracerProvider()
    queue = exqueue.Queue("memory://", middleware=[TracingMiddleware(provider)])
    w = queue.worker(name="trace.full")(lambda: None)
    full = {f"k{i}": "v" for i in range(META_ENTRIES_LIMIT)}
    job_id = w.options(meta=full).enqueue()
    record = queue.storage.get(job_id)
    assert record is not None and dict(record.meta) == full
    roomy = queue.storage.get(w.enqueue())
    assert roomy is not None and "traceparent" in roomy.meta
