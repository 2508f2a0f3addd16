"""ASGI middleware: the request's record (context, access log, metrics), and the body limit.

Plain ASGI classes rather than ``BaseHTTPMiddleware``: they see every message, add no task
per request, and let a streamed body be refused while it arrives. They run for every request,
so they do as little as they can: one pass over the headers, metric children looked up once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...runtime.context import accept_request_id, bind, trace_header_names
from ...runtime.logging import RequestLogger
from .disconnect import ABANDONED_KEY, CLIENT_CLOSED_REQUEST, HANDLER_KEY, end_quietly
from .metrics import ACCESS_LOG_SKIPPED, RequestDurations
from .problems import problem_response

REQUEST_ID_HEADER = b"x-request-id"
CLOSE = (b"connection", b"close")
HTTP_1 = ("1.0", "1.1")

# Probes and scrapes arrive every few seconds: their access log lines are debug level.
QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})

log = RequestLogger("access")


class RequestRecordMiddleware:
    """Everything the service keeps of a request, in one layer: its context, its response
    headers, its access log line and its ``http_server_request_duration_seconds`` observation.

    The request id comes from the ``x-request-id`` header when it is well formed, otherwise a
    fresh one is made; it is in every log line written while the request is handled (offloaded
    work included) and in the response's ``x-request-id`` header. The deadline is ``budget``
    seconds from now: offloaded work of the request stops with it. With ``continue_traces``,
    the caller's trace context (``traceparent``, ``baggage``) is made current too: the service
    does it itself when no instrumentation makes server spans.

    While ``close_connections()`` is true (the service is draining), responses carry
    ``connection: close``, so clients holding a keep-alive connection reconnect, and the load
    balancer sends the new connection to another instance.

    The request's task is registered for its connection to cancel if the client goes away
    (``disconnect.py``); such a request ends quietly and is logged with status 499. An
    exception nothing else handled becomes a 500 problem response that names the request id
    and nothing else; the traceback goes to the log.

    Every request is measured. The access log has every error (4xx, 5xx), every request that
    took ``slow`` seconds or more, and of the others, the fast successful ones, all up to
    ``per_second`` in a second and one in ``sample`` beyond that;
    ``http_server_access_log_skipped_total`` counts those it leaves out.

    One layer rather than one per concern: each layer costs every request an ASGI call and a
    wrapped ``send``, and these four share both.
    """

    def __init__(
        self,
        app: ASGIApp,
        budget: float | None = None,
        close_connections: Callable[[], bool] | None = None,
        *,
        continue_traces: bool = False,
        per_second: int = 0,
        sample: int = 1,
        slow: float = 0.1,
    ) -> None:
        self.app = app
        self.budget = budget
        self.close_connections = close_connections or (lambda: False)
        self.continue_traces = continue_traces
        names = trace_header_names() if continue_traces else ()
        self.trace_headers = frozenset(name.encode() for name in names)
        self.slow = slow
        self._durations = RequestDurations()
        self._fast_successes = ACCESS_LOG_SKIPPED.sample(per_second, sample)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        given_id = None
        trace: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given_id = value.decode("latin-1")
            elif name in self.trace_headers:
                trace[name.decode("latin-1")] = value.decode("latin-1")
        request_id = accept_request_id(given_id)
        scope[HANDLER_KEY] = task
        status: int | None = None

        async def send_with_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())]
                if self.close_connections():
                    headers.append(CLOSE)
                message["headers"] = headers
            await send(message)

        # Without continue_traces, OpenTelemetry's middleware continues the caller's trace.
        caller_trace = trace if self.continue_traces else None
        with bind(request_id, budget=self.budget, caller_trace=caller_trace):
            started = time.perf_counter()
            try:
                await self.app(scope, receive, send_with_record)
            except asyncio.CancelledError:
                if ABANDONED_KEY not in scope:
                    raise  # the server is stopping, or the handler cancelled something itself
                end_quietly(task, scope)
            except Exception:
                log.exception("request_failed", method=scope["method"], path=scope["path"])
                if status is not None:
                    raise  # the response has begun: all that is left is to drop the connection
                response = problem_response(500, "An unexpected error occurred.")
                await response(scope, receive, send_with_record)
            finally:
                unanswered = CLIENT_CLOSED_REQUEST if ABANDONED_KEY in scope else 500
                self._record(scope, status or unanswered, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, duration: float) -> None:
        route = getattr(scope.get("route"), "path", None) or ""
        self._durations.observe(scope["method"], route, status, scope["scheme"], duration)
        quiet = scope["path"] in QUIET_PATHS
        fast_success = status < 400 and duration < self.slow and not quiet
        if fast_success and not self._fast_successes.keep():
            return
        client = scope.get("client")
        (log.debug if quiet else log.info)(
            "request",
            method=scope["method"],
            path=scope["path"],
            route=route or "unmatched",
            status=status,
            duration_ms=round(duration * 1000, 3),
            client=f"{client[0]}:{client[1]}" if client else None,
        )


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_size`` bytes with 413, without reading them in full.

    A declared ``content-length`` over the limit is refused before any of the body is read.
    A chunked body is counted as it streams in and refused at the first byte past the limit.
    A body framed by its ``content-length`` is not counted: the server delivers no more than
    that, and an HTTP/1 request with neither header has no body.
    """

    def __init__(self, app: ASGIApp, max_size: int) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared.isdigit() and int(declared) > self.max_size:
            response = problem_response(413, self._detail())
            await response(scope, receive, send)
            return
        framed = declared.isdigit() if declared is not None else scope["http_version"] in HTTP_1
        if framed and not chunked:
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_size:
                    # Raised inside the endpoint's body read, so the app's exception handlers
                    # turn it into the same 413 problem response.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return f"The request body is larger than the limit of {self.max_size} bytes."
