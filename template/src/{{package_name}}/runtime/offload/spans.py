"""The span of one offloaded call, a child of the span that offloaded it.

It runs from submission to return, in the worker that ran the call; its event
``offload.started`` ends the wait for a free worker. A worker process killed mid-call cannot
end its span: the parent ends one in its place (:func:`record_killed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from .job import Job

T = TypeVar("T")

tracer = trace.get_tracer(__name__)


def run_in_span(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    label: str,
    executor: str,
    submitted_ns: int,
) -> T:
    """Call ``fn`` inside its offload span, under the current span (the caller's)."""
    with tracer.start_as_current_span(
        f"offload {label}",
        start_time=submitted_ns,
        attributes={"code.function.name": label, "offload.executor": executor},
    ) as span:
        if span.is_recording():
            waited_ms = max(0, time.time_ns() - submitted_ns) / 1e6
            span.set_attribute("offload.queue_wait_ms", waited_ms)
            span.add_event("offload.started", {"offload.queue_wait_ms": waited_ms})
        return fn(*args, **kwargs)


def record_killed(job: Job, pid: int | None, reason: str) -> None:
    """End, from the parent, the span of a call whose worker process died running it."""
    headers = {key: value for key, value in job.values.items() if value is not None}
    span = tracer.start_span(
        f"offload {job.label}",
        context=propagate.extract(headers),
        start_time=job.submitted_ns,
        attributes={
            "code.function.name": job.label,
            "offload.executor": "process",
            "offload.worker.pid": pid or 0,
            "error.type": reason,
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"the worker process was killed: {reason}"))
    span.end()
