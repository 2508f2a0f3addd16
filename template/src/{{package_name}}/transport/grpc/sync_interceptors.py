"""The thread-pool server's interceptor: request context, stall watch, access log, metrics, errors.

grpcio calls ``intercept_service`` on its polling thread, so it only wraps the method's
handler; the wrapper runs on a handler thread for each RPC and, in this order:

1. takes the request id from ``x-request-id`` metadata (or makes one) and sends it back in
   the trailing metadata (streamed responses: in the initial metadata too);
2. binds it (and a W3C ``traceparent``) for every log line the handler and its offloaded work
   write;
3. registers the handler with the stall watchdog, which logs the thread's stack if the
   handler runs longer than the stall threshold, while it still runs;
4. turns an exception, or a request message that cannot be parsed, into a status
   (``errors.py``): the client gets a useful message, never internals, and the server carries on;
5. writes one access log line and observes ``request_duration_seconds``.

Streaming RPCs get the same, except the stall watch: a stream that waits between messages
is not stalled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from ...runtime.stall import StallWatchdog
from .calls import UNDECODABLE, Call, is_observed, tolerant
from .errors import UNDECODABLE_REQUEST, InvalidArgumentError, status_for

Behavior = Callable[[Any, grpc.ServicerContext], Any]
StreamBehavior = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


class RequestInterceptor(grpc.ServerInterceptor):
    """Wraps every application RPC; health checks and reflection pass through untouched."""

    def __init__(self, watchdog: StallWatchdog) -> None:
        self._watchdog = watchdog

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not is_observed(method):
            return handler  # None: grpcio answers UNIMPLEMENTED
        return self._wrap(handler, method)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        deserializer = handler.request_deserializer
        if not handler.request_streaming:
            deserializer = tolerant(deserializer)  # garbage: INVALID_ARGUMENT, not INTERNAL
        codec = {
            "request_deserializer": deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behavior = _unary(handler.unary_unary, method, self._watchdog)
            return grpc.unary_unary_rpc_method_handler(behavior, **codec)
        if handler.stream_unary is not None:
            behavior = _unary(handler.stream_unary, method, self._watchdog)
            return grpc.stream_unary_rpc_method_handler(behavior, **codec)
        if handler.unary_stream is not None:
            stream = _streaming(handler.unary_stream, method)
            return grpc.unary_stream_rpc_method_handler(stream, **codec)
        assert handler.stream_stream is not None
        stream = _streaming(handler.stream_stream, method)
        return grpc.stream_stream_rpc_method_handler(stream, **codec)


def _unary(behavior: Behavior, method: str, watchdog: StallWatchdog) -> Behavior:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        call = _begin(method, context)
        with call.scope():
            if request is UNDECODABLE:
                _fail(call, context, InvalidArgumentError(UNDECODABLE_REQUEST))
            with watchdog.watch_handler(method, request_id=call.request_id):
                try:
                    response = behavior(request, context)
                except Exception as error:  # every failure becomes a status
                    _fail(call, context, error)
            call.finish(_final_code(context))
            return response

    return handle


def _streaming(behavior: StreamBehavior, method: str) -> StreamBehavior:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _begin(method, context)
        context.send_initial_metadata(call.response_metadata)  # before the first message
        with call.scope():
            if request is UNDECODABLE:
                _fail(call, context, InvalidArgumentError(UNDECODABLE_REQUEST))
            try:
                yield from behavior(request, context)
            except Exception as error:  # every failure becomes a status
                _fail(call, context, error)
            call.finish(_final_code(context))

    return handle


def _begin(method: str, context: grpc.ServicerContext) -> Call:
    call = Call.begin(method, context.invocation_metadata(), context.peer())
    # Trailing metadata reaches every client; sending initial metadata on its own would cost
    # an extra round of work per RPC (a quarter more CPU for a light unary RPC).
    context.set_trailing_metadata(call.response_metadata)
    return call


def _fail(call: Call, context: grpc.ServicerContext, error: Exception) -> NoReturn:
    """Answer with the status ``error`` stands for; log it; never returns."""
    chosen = _code_set_by_handler(context)
    if chosen is not None and type(error) is Exception and not error.args:
        # The handler called context.abort(): grpcio raises a bare Exception after recording
        # the status the handler chose, which is what the client gets.
        call.finish(chosen)
        raise error
    code, details = status_for(error, call.request_id)
    call.finish(code, error)
    context.abort(code, details)


def _final_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status the client sees for an RPC whose handler returned."""
    if not context.is_active():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return _code_set_by_handler(context) or grpc.StatusCode.OK


def _code_set_by_handler(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    # grpcio's servicer context has code() (since 1.38); the type stubs do not list it.
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code
