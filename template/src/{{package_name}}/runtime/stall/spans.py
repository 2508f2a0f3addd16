"""Stalls in the trace: each reported stall is a span of its own.

A stall of a request becomes a child of that request's span; a stall with no request running
starts a trace of its own. The span is made once the stall is over, with its start and end as
its times: the request's span may have ended by then, and an event added to it would be dropped.
The span is not an error: the request may well have succeeded, only late.
"""

from __future__ import annotations

import time
from typing import cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

tracer = trace.get_tracer(__name__)


def record_stall(event: str, started: float, ended: float, report: dict[str, object]) -> None:
    """One span named ``event`` from ``started`` to ``ended`` (``time.monotonic()`` values),
    saying what the stall's log event, ``report``, says; under its request's trace if any."""
    traceparent = report.get("traceparent")
    parent = (
        propagate.extract({"traceparent": traceparent})
        if isinstance(traceparent, str) and traceparent
        else otel_context.Context()  # not the watchdog thread's context: a trace of its own
    )
    to_epoch_ns = time.time_ns() - time.monotonic_ns()
    span = tracer.start_span(
        event,
        context=parent,
        start_time=int(started * 1e9) + to_epoch_ns,
        attributes={
            "stall.kind": str(report["kind"]),
            "stall.name": str(report["name"]),
            "stall.cause": str(report["cause"]),
            "stall.culprit": str(report["culprit"] or ""),
            "stall.duration_s": ended - started,
            "code.stacktrace": "\n".join(cast(list[str], report["stack"])),
        },
    )
    span.end(end_time=int(ended * 1e9) + to_epoch_ns)
