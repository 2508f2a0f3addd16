"""The thread-pool server's handling: the core's sequence (``handlers.py``) on threads.

The wrapper runs on a handler thread, or on a refusing one past the admission limit
(``admission.py``). Unary RPCs are also watched by the stall watchdog, which logs the thread's
stack if the handler runs longer than the stall threshold. A stream that waits between messages
is not stalled, so streams are not watched.

A handler thread blocked in ``offload_sync`` cannot be interrupted: when the RPC ends early
(cancelled, deadline), gRPC's termination callback cancels the request's ``cancel_scope``
instead, which drops a queued call or stops a worker process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from ...runtime.offload import cancel_scope
from ...runtime.stall import StallWatchdog
from .admission import REJECTED, is_refused
from .errors import UNDECODABLE, UNDECODABLE_REQUEST, InvalidArgumentError, status_for
from .handlers import RequestHandling, deadline_passed
from .rpc import AccessLog, RpcRecord, is_traced
from .sync_health import OnOwnThreads

if TYPE_CHECKING:
    from .handlers import Handler, Wrap

Behavior = Callable[[Any, grpc.ServicerContext], Any]


class SyncHandling(RequestHandling):
    def __init__(
        self,
        watchdog: StallWatchdog,
        *,
        continue_traces: bool = False,
        access_log: AccessLog | None = None,
    ) -> None:
        super().__init__(continue_traces=continue_traces, access_log=access_log)
        self._watchdog = watchdog

    def handle(self, behavior: Behavior, method: str, *, streamed: bool) -> Behavior:
        if streamed:
            return self._streaming(behavior, method)
        begin = self.begin
        watch_handler = self._watchdog.watch_handler

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if is_refused():
                _refuse(context)
            record = begin(method, context)
            with record, cancel_scope(context.add_callback):
                if request is UNDECODABLE:
                    _fail(record, context, InvalidArgumentError(UNDECODABLE_REQUEST))
                with watch_handler(method):
                    try:
                        response = behavior(request, context)
                    except Exception as error:  # every failure becomes a status
                        _fail(record, context, error)
                record.finish(_final_code(context))
                return response

        return handle

    def _streaming(self, behavior: Behavior, method: str) -> Behavior:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if is_refused():
                _refuse(context)
            record = self.begin(method, context)
            context.send_initial_metadata(record.response_metadata)  # before the first message
            with record, cancel_scope(context.add_callback):
                if request is UNDECODABLE:
                    _fail(record, context, InvalidArgumentError(UNDECODABLE_REQUEST))
                try:
                    yield from behavior(request, context)
                except Exception as error:  # every failure becomes a status
                    _fail(record, context, error)
                record.finish(_final_code(context))

        return handle


def _refuse(context: grpc.ServicerContext) -> NoReturn:
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REJECTED)


def on_own_threads(name: str) -> Wrap:
    """A wrapping for :func:`handlers.registering` that runs handlers on two threads of their
    own rather than the handler threads: for reflection, which answers while those are busy."""
    pool = ThreadPoolExecutor(2, thread_name_prefix=name)
    kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")

    def on_own_threads(handler: Handler, _method: str) -> Handler:
        behaviors = {kind: getattr(handler, kind) for kind in kinds}
        return handler._replace(  # type: ignore[attr-defined, no-any-return]
            **{kind: OnOwnThreads(b, pool) for kind, b in behaviors.items() if b is not None}
        )

    return on_own_threads


def _fail(record: RpcRecord, context: grpc.ServicerContext, error: Exception) -> NoReturn:
    """Answer with the status ``error`` stands for; log it; never returns."""
    chosen = _code_set_by_handler(context)
    if chosen is not None and type(error) is Exception and not error.args:
        # The handler called context.abort(): grpcio raises a bare Exception after recording
        # the status the handler chose, which is what the client gets.
        record.finish(chosen)
        raise error
    code, details = status_for(error, record.request_id)
    record.finish(code, error)
    context.abort(code, details)


def _final_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status the client sees for an RPC whose handler returned."""
    if not context.is_active():
        if deadline_passed(context):
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return _code_set_by_handler(context) or grpc.StatusCode.OK


def _code_set_by_handler(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    # grpcio's servicer context has code() (since 1.38); the type stubs do not list it.
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code


def tracing_interceptor() -> grpc.ServerInterceptor:
    """Server spans for application RPCs, from OpenTelemetry's gRPC instrumentation.

    It extracts the caller's W3C trace context (``traceparent``, ``baggage`` metadata) and makes
    the RPC's span current while the handler runs; first in the server's list, so everything
    after it runs inside the span. Health checks and reflection are not traced. Imported only by
    a server that exports spans: the import costs about a quarter of a second of CPU.
    """
    from opentelemetry.instrumentation.grpc import server_interceptor  # noqa: PLC0415

    made = server_interceptor(filter_=is_traced)  # type: ignore[no-untyped-call]
    interceptor: grpc.ServerInterceptor = made
    return interceptor
