"""OpenTelemetry tracing (``pip install exqueue[otel]``), built on the middleware hooks.

``queue.add_middleware(TracingMiddleware())`` makes:

- a *producer* span ``send <worker>`` at each enqueue, a child of the span
  current there (a web request's, say). The trace context (W3C
  ``traceparent``/``tracestate``, through the globally configured propagator)
  is written into the job's ``meta``, so it travels with the job to whatever
  process runs it;
- a *consumer* span ``process <worker>`` per attempt, a child of that
  producer span (one trace from the request to every attempt), current while
  the job runs, so the job's own spans nest under it. A failed attempt records
  the exception and sets an error status; a retry, a death and a release are
  marked in the attributes.

Attributes follow the messaging semantic conventions: ``messaging.system``
(``exqueue``), ``messaging.operation.type`` (``send``/``process``),
``messaging.operation.name``, ``messaging.destination.name`` (the worker
type), ``messaging.message.id`` (the job id), plus ``exqueue.job.attempt``
and ``exqueue.job.max_attempts``.

Spans go wherever the tracer provider sends them; with the SDK use a
``BatchSpanProcessor``, whose export runs on its own thread, so a slow or
broken exporter never holds up a job (a hook's exception is logged and the job
goes on, see :mod:`exqueue.middleware`). A job whose ``meta`` has no room left
for the context (64 entries, 8 KiB) is enqueued without it, and its attempts
start traces of their own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from exqueue.middleware import Middleware
from exqueue.storage import META_BYTES_LIMIT, META_ENTRIES_LIMIT, JobRecord, NewJob

__all__ = ["TracingMiddleware"]

log = logging.getLogger("exqueue")

SYSTEM = "exqueue"


def _meta_fits(meta: dict[str, str]) -> bool:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    return len(meta) <= META_ENTRIES_LIMIT and size <= META_BYTES_LIMIT


class TracingMiddleware(Middleware):
    """Producer and consumer spans linked through the job's ``meta`` (see the module)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("exqueue", tracer_provider=tracer_provider)
        self._attempt = threading.local()

    # -- producer ----------------------------------------------------------------------

    def enqueue(self, job: NewJob) -> NewJob:
        attributes = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "enqueue",
            "messaging.destination.name": job.worker,
            "messaging.message.id": job.id,
        }
        with self.tracer.start_as_current_span(
            f"send {job.worker}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            meta = {**job.meta, **carrier}
            if not carrier or not _meta_fits(meta):
                span.set_attribute("exqueue.trace_context_stored", False)
                return job
        return replace(job, meta=meta)

    # -- consumer ----------------------------------------------------------------------

    def started(self, job: JobRecord) -> None:
        parent = propagate.extract(dict(job.meta)) if job.meta else None
        span = self.tracer.start_span(
            f"process {job.worker}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "run",
                "messaging.destination.name": job.worker,
                "messaging.message.id": job.id,
                "exqueue.job.attempt": job.attempt,
                "exqueue.job.max_attempts": job.max_attempts,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        self._attempt.current = (job.id, span, token)

    def _end(self, job: JobRecord, outcome: str, error: BaseException | None = None) -> None:
        current: tuple[str, Any, Any] | None = getattr(self._attempt, "current", None)
        if current is None or current[0] != job.id:
            return  # not this thread's attempt (a lost worker's death, told elsewhere)
        self._attempt.current = None
        _, span, token = current
        try:
            span.set_attribute("exqueue.job.outcome", outcome)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()
        finally:
            context.detach(token)

    def succeeded(self, job: JobRecord, duration: float) -> None:
        self._end(job, "succeeded")

    def failed(
        self, job: JobRecord, error: BaseException, duration: float, retry_at: float
    ) -> None:
        self._end(job, "retried", error)

    def dead(self, job: JobRecord, error: BaseException | None) -> None:
        self._end(job, "dead", error)

    def released(self, job: JobRecord) -> None:
        self._end(job, "released")

    def cancelled(self, job: JobRecord) -> None:
        self._end(job, "cancelled")

    def timed_out(self, job: JobRecord, duration: float) -> None:
        self._end(job, "timed_out", TimeoutError(f"job {job.id} ran past its timeout"))

    def snoozed(self, job: JobRecord, run_at: float) -> None:
        self._end(job, "snoozed")
