"""Stalls in the trace: each reported stall is a span of its own.

A stall of a request becomes a child of that request's span; a stall with no request running
starts a trace of its own. The span is made once the stall is over, with its start and end as
its times: the request's span may have ended by then, and an event added to it would be dropped.
The span is not an error: the request may well have succeeded, only late.
"""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

tracer = trace.get_tracer(__name__)


def record_stall(
    event: str,
    *,
    started: float,
    ended: float,
    traceparent: str | None,
    kind: str,
    name: str,
    cause: str,
    culprit: str | None,
    stack: list[str],
) -> None:
    """One span named ``event`` (``event_loop_stalled``, ``handler_stalled``) from ``started`` to
    ``ended`` (``time.monotonic()`` values), under ``traceparent`` if a request was running."""
    parent = (
        propagate.extract({"traceparent": traceparent})
        if traceparent
        else otel_context.Context()  # not the watchdog thread's context: a trace of its own
    )
    to_epoch_ns = time.time_ns() - time.monotonic_ns()
    span = tracer.start_span(
        event,
        context=parent,
        start_time=int(started * 1e9) + to_epoch_ns,
        attributes={
            "stall.kind": kind,
            "stall.name": name,
            "stall.cause": cause,
            "stall.culprit": culprit or "",
            "stall.duration_s": ended - started,
            "code.stacktrace": "\n".join(stack),
        },
    )
    span.end(end_time=int(ended * 1e9) + to_epoch_ns)
