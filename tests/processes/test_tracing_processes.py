"""OpenTelemetry: one trace from a web request's span, through enqueue, to the job's
attempts in another process (the SDK's in-memory exporter on both sides)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import exqueue
from exqueue.otel import TracingMiddleware

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry import trace
    import exqueue
    from exqueue.otel import TracingMiddleware

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    queue = exqueue.Queue(os.environ["APP_URL"], middleware=[TracingMiddleware(provider)])
    tracer = provider.get_tracer("app")

    @queue.worker(name="app.signup_mail", max_retries=1, backoff=exqueue.Fixed(0))
    def signup_mail(user):
        with tracer.start_as_current_span("render mail"):
            pass
        job = exqueue.current_job()
        if job.attempt == 1:
            raise RuntimeError("smtp down")

    queue.drain()
    json.dump([
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace": s.context.trace_id,
            "id": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
            "attributes": dict(s.attributes),
            "status": s.status.status_code.name,
            "events": [e.name for e in s.events],
        }
        for s in exporter.get_finished_spans()
    ], sys.stdout)
    """
)


def test_one_trace_from_request_to_every_attempt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    queue = exqueue.Queue(url, middleware=[TracingMiddleware(provider)])
    queue.worker(name="app.signup_mail")(lambda user: None)
    with provider.get_tracer("web").start_as_current_span("POST /signup", kind=SpanKind.SERVER):
        job_id = queue.enqueue("app.signup_mail", "ada")
    queue.storage.close()
    by_name = {span.name: span for span in exporter.get_finished_spans()}
    request, producer = by_name["POST /signup"], by_name["send app.signup_mail"]
    assert producer.kind == SpanKind.PRODUCER
    assert producer.parent is not None and producer.parent.span_id == request.context.span_id
    assert producer.attributes is not None
    assert producer.attributes["messaging.message.id"] == job_id
    assert producer.attributes["messaging.destination.name"] == "app.signup_mail"

    (tmp_path / "tracing_worker.py").write_text(WORKER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "tracing_worker.py")],
        env=dict(os.environ, APP_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout)
    consumers = [s for s in spans if s["kind"] == "CONSUMER"]
    assert [s["attributes"]["exqueue.job.attempt"] for s in consumers] == [1, 2]
    for span in spans:
        assert span["trace"] == request.context.trace_id  # one trace across processes
    for span in consumers:
        assert span["name"] == "process app.signup_mail"
        assert span["parent"] == producer.context.span_id
        assert span["attributes"]["messaging.system"] == "exqueue"
        assert span["attributes"]["messaging.operation.type"] == "process"
        assert span["attributes"]["messaging.message.id"] == job_id
    failed, ok = consumers
    assert failed["status"] == "ERROR" and failed["events"] == ["exception"]
    assert failed["attributes"]["exqueue.job.outcome"] == "retried"
    assert ok["status"] == "UNSET" and ok["attributes"]["exqueue.job.outcome"] == "succeeded"
    # The job's own span nests under its attempt's span.
    renders = [s for s in spans if s["name"] == "render mail"]
    assert {s["parent"] for s in renders} == {c["id"] for c in consumers}
