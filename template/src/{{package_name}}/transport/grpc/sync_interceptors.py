"""The thread-pool server's interceptor: the core's sequence (``interceptor.py``) on threads.

grpcio calls ``intercept_service`` on its polling thread, so it only decides: an RPC past the
admission limit gets a handler that refuses it on a thread of its own, reflection runs on
threads of its own (like health checks, see ``health.py``), and an application RPC gets its
handler rebuilt. The wrapper then runs on a handler thread; unary RPCs are also watched by the
stall watchdog, which logs the thread's stack if the handler runs longer than the stall
threshold. A stream that waits between messages is not stalled, so streams are not watched.

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
from .admission import REJECTED, Admission
from .errors import UNDECODABLE, UNDECODABLE_REQUEST, InvalidArgumentError, status_for
from .interceptor import InterceptorCore, deadline_passed
from .rpc import AccessLog, RpcRecord, is_observed, traced_rpcs
from .sync_health import OnOwnThreads

if TYPE_CHECKING:
    from .interceptor import Handler

Behavior = Callable[[Any, grpc.ServicerContext], Any]


class RequestInterceptor(InterceptorCore, grpc.ServerInterceptor):
    def __init__(
        self,
        admission: Admission,
        watchdog: StallWatchdog,
        *,
        continue_traces: bool = False,
        access_log: AccessLog | None = None,
    ) -> None:
        super().__init__(admission, continue_traces=continue_traces, access_log=access_log)
        self._watchdog = watchdog
        self._own_threads = ThreadPoolExecutor(2, thread_name_prefix="grpc-infra")
        self._refuse: Handler = grpc.unary_unary_rpc_method_handler(
            OnOwnThreads(_refuse, self._own_threads)
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None  # grpcio answers UNIMPLEMENTED
        if is_observed(method) and not self.admission.try_enter():  # AdmittedThreads gives back
            return self._refuse
        return self.rebuilt(handler, method)

    def infrastructure(self, handler: Handler) -> Handler:
        return _on_threads(handler, self._own_threads)

    def handle(self, behavior: Behavior, method: str, *, streamed: bool) -> Behavior:
        if streamed:
            return self._streaming(behavior, method)
        begin = self.begin
        watch_handler = self._watchdog.watch_handler

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
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


def _refuse(_request: Any, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REJECTED)


def _on_threads(handler: Handler, pool: ThreadPoolExecutor) -> Handler:
    """``handler`` run on ``pool`` rather than the handler threads (unless it chose already)."""
    fields = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    behaviors = {name: getattr(handler, name) for name in fields}
    if any(hasattr(b, "experimental_thread_pool") for b in behaviors.values()):
        return handler  # health checks: on threads of their own already
    return handler._replace(  # type: ignore[attr-defined, no-any-return]
        **{name: OnOwnThreads(b, pool) for name, b in behaviors.items() if b is not None}
    )


def _fail(record: RpcRecord, context: grpc.ServicerContext, error: Exception) -> NoReturn:
    """Answer with the status ``error`` stands for; log it; never returns."""
    # grpcio's servicer context has code() (since 1.38); the type stubs do not list it.
    chosen: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
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
    if context.is_active():
        return context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
    if deadline_passed(context):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def tracing_interceptor() -> grpc.ServerInterceptor:
    """Server spans for application RPCs, from OpenTelemetry's gRPC instrumentation.

    It extracts the caller's W3C trace context (``traceparent``, ``baggage`` metadata) and makes
    the RPC's span current while the handler runs; first in the server's list, so everything
    after it runs inside the span. Health checks and reflection are not traced, nor the services
    ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` names (:func:`.rpc.traced_rpcs`). Imported only by a
    server that exports spans: the import costs about a quarter of a second of CPU.
    """
    from opentelemetry.instrumentation.grpc import server_interceptor  # noqa: PLC0415

    traced = traced_rpcs()
    return server_interceptor(filter_=traced)  # type: ignore[no-untyped-call, no-any-return]
