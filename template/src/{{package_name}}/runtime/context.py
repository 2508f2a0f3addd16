"""Request-scoped values (request id, trace context, deadline) kept in contextvars.

Every log line reads them from here, and :mod:`.offload` carries them into worker threads and
processes. A ``contextvars.Context`` cannot be pickled, so for a worker process the request id
and the OpenTelemetry context (``traceparent``, ``tracestate``, ``baggage``, as the configured
propagators write them) travel as a plain dict: :func:`snapshot` and :func:`restore`.

The trace context itself is OpenTelemetry's: the transports' instrumentations extract it from
the incoming request when spans are exported; when they are not, :func:`bind` does.
:func:`bind` also keeps the request's ``traceparent`` with its id, where a stall report can
read it from another thread (:func:`snapshot_of`).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import Context, ContextVar, Token

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

MAX_REQUEST_ID_LENGTH = 128

# Letters, digits and a few separators that are safe in headers, log lines and URLs.
_REQUEST_ID_RE = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


class _Request:
    """What the context knows of the request being handled, and the block it is current in.

    Made for each request (and for each nested deadline or restored snapshot), and never
    changed once current: one context variable holds all of it, so that binding a request sets
    one variable, not one per value. It is its own context manager: entering it makes it
    current, after making the trace context of the headers ``caller_trace`` current if there
    are any; with ``find_trace``, its ``traceparent`` is that of the span current then. A class,
    not a generator-based context manager, which costs microseconds more: a transport enters
    one for every request.
    """

    __slots__ = (
        "_attached",
        "_token",
        "caller_trace",
        "deadline",
        "find_trace",
        "request_id",
        "traceparent",
    )

    def __init__(
        self,
        request_id: str | None,
        traceparent: str | None,
        deadline: float | None,
        caller_trace: Mapping[str, str] | None = None,
        *,
        find_trace: bool = False,
    ) -> None:
        self.request_id = request_id
        self.traceparent = traceparent
        # A time.monotonic() value: set by the transport from the gRPC deadline or the HTTP
        # request budget, read by offload() so queued and running work stops with the caller.
        self.deadline = deadline
        self.caller_trace = caller_trace
        self.find_trace = find_trace
        self._attached: Token[otel_context.Context] | None = None

    def __enter__(self) -> None:
        if self.caller_trace:
            self._attached = otel_context.attach(propagate.extract(self.caller_trace))
        if self.find_trace:
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                self.traceparent = _traceparent_of(span)
        self._token = _request.set(self)

    def __exit__(self, *_: object) -> None:
        _request.reset(self._token)
        if self._attached is not None:
            otel_context.detach(self._attached)


_OUTSIDE = _Request(None, None, None)  # outside any request
_request: ContextVar[_Request] = ContextVar("request", default=_OUTSIDE)


def accept_request_id(value: str | None) -> str:
    """``value`` if it is a well-formed request id, otherwise a fresh, random one (32 hex
    digits), unique but not secret.

    Incoming ids end up in logs and response headers: anything long or with unusual
    characters (spaces, quotes, control characters) is replaced rather than trusted.
    """
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    # From the process's pseudo-random generator (reseeded in forked children): ``secrets``
    # asks the kernel each time and lets go of the GIL meanwhile, and with many handler
    # threads the caller then waits to get it back. (``hex()`` of the bytes is twice as
    # quick as formatting the integer.)
    return random.getrandbits(128).to_bytes(16).hex()


def current_request_id() -> str | None:
    """The request id of the request being handled, or ``None`` outside a request."""
    return _request.get().request_id


def current_traceparent() -> str | None:
    """The W3C traceparent of the request being handled (its server span), if it has one."""
    return _request.get().traceparent


def trace_header_names() -> frozenset[str]:
    """The headers the configured propagators read: ``traceparent``, ``tracestate``, ``baggage``."""
    return frozenset(propagate.get_global_textmap().fields)


def current_deadline() -> float | None:
    """The request's deadline (a ``time.monotonic()`` value), or ``None`` if it has none."""
    return _request.get().deadline


def deadline_after(seconds: float | None) -> AbstractContextManager[None]:
    """Give the block a deadline ``seconds`` from now; ``None`` leaves the current one.

    A nested deadline never extends an outer one: the earlier of the two holds.
    """
    if seconds is None:
        return nullcontext()
    current = _request.get()
    return _Request(current.request_id, current.traceparent, _deadline_in(seconds))


def _deadline_in(seconds: float | None) -> float | None:
    """``seconds`` from now, or sooner if the current deadline is; ``None``: the current one."""
    outer = _request.get().deadline
    if seconds is None:
        return outer
    deadline = time.monotonic() + seconds
    return deadline if outer is None else min(outer, deadline)


def bind(
    request_id: str,
    *,
    budget: float | None = None,
    caller_trace: Mapping[str, str] | None = None,
) -> AbstractContextManager[None]:
    """Make ``request_id`` current for the duration of the block; with ``budget``, a deadline
    that many seconds from now (:func:`deadline_after`); with ``caller_trace``, the caller's
    trace context from its headers, current as an instrumentation would make it, without a
    span. A transport binds each request so.

    The trace context that is current then (the caller's, or the server span of the
    transport's instrumentation) is remembered as the request's ``traceparent``. A transport
    that continues traces itself passes the caller's trace headers even when there are none
    (``{}``): then no span can be current, and OpenTelemetry is not asked.
    """
    # {}: no caller's trace, and no instrumentation's span to find
    find_trace = caller_trace != {}
    return _Request(request_id, None, _deadline_in(budget), caller_trace, find_trace=find_trace)


def _traceparent_of(span: trace.SpanContext) -> str:
    """The W3C ``traceparent`` of ``span``, whichever propagators are configured."""
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"


def snapshot() -> dict[str, str | None]:
    """The request id and the current trace context as a plain, picklable dict."""
    values = {"request_id": _request.get().request_id}
    propagate.inject(values)  # traceparent, tracestate, baggage: as the propagators write them
    return values


def snapshot_of(ctx: Context) -> dict[str, str | None]:
    """The request id and traceparent of another context (safe while it runs elsewhere)."""
    request = ctx.get(_request, _OUTSIDE)
    return {"request_id": request.request_id, "traceparent": request.traceparent}


def restore(values: Mapping[str, str | None]) -> AbstractContextManager[None]:
    """Make the values of a :func:`snapshot` current for the duration of the block: the
    request id, and the trace context as the parent of the spans started in it.
    """
    headers = {key: value for key, value in values.items() if value is not None}
    deadline = _request.get().deadline
    return _Request(values.get("request_id"), values.get("traceparent"), deadline, headers)
