"""The asyncio server's interceptor: request context, access log, metrics, errors.

Each RPC runs as its own asyncio task; the wrapper around the method's handler, in order:

1. takes the request id from ``x-request-id`` metadata (or makes one) and sends it back in
   the trailing metadata (streamed responses: in the initial metadata too);
2. binds it (and a W3C ``traceparent``) for every log line the handler and its offloaded work
   write (the stall watchdog also names the request id of the task that blocks the loop);
3. turns an exception, or a request message that cannot be parsed, into a status
   (``errors.py``): the client gets a useful message, never internals, and the server carries on;
4. writes one access log line and observes ``request_duration_seconds``.

Stalls are watched for the whole event loop (``StallWatchdog.watch_loop``), not per RPC.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from .calls import UNDECODABLE, Call, is_observed, tolerant
from .errors import UNDECODABLE_REQUEST, InvalidArgumentError, status_for

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every application RPC; health checks and reflection pass through untouched."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not is_observed(method):
            return handler  # None: grpcio answers UNIMPLEMENTED
        return _wrap(handler, method)


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    deserializer = handler.request_deserializer
    if not handler.request_streaming:
        deserializer = tolerant(deserializer)  # garbage: INVALID_ARGUMENT, not INTERNAL
    codec = {
        "request_deserializer": deserializer,
        "response_serializer": handler.response_serializer,
    }
    # grpc.aio reuses grpc.RpcMethodHandler, whose types describe synchronous behaviours; here
    # they are coroutine functions or, for streamed responses, async generator functions (or
    # coroutine functions that call context.write()).
    behavior: Any = (
        handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
    )
    wrapped: Any = (
        _async_generator(behavior, method)
        if inspect.isasyncgenfunction(behavior)
        else _coroutine(behavior, method, streamed=handler.response_streaming)
    )
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrapped, **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrapped, **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrapped, **codec)
    return grpc.stream_stream_rpc_method_handler(wrapped, **codec)


def _coroutine(behavior: Behavior, method: str, *, streamed: bool) -> Behavior:
    async def handle(request: Any, context: Context) -> Any:
        call = _begin(method, context)
        if streamed:  # the handler calls context.write(): send the id ahead of the messages
            await context.send_initial_metadata(call.response_metadata)
        with call.scope():
            if request is UNDECODABLE:
                await _fail(call, context, InvalidArgumentError(UNDECODABLE_REQUEST))
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                call.finish(_cancelled_code(context))
                raise
            except Exception as error:  # every failure becomes a status
                await _fail(call, context, error)
            call.finish(_final_code(context))
            return response

    return handle


def _async_generator(behavior: StreamBehavior, method: str) -> StreamBehavior:
    async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
        call = _begin(method, context)
        await context.send_initial_metadata(call.response_metadata)  # before the first message
        with call.scope():
            if request is UNDECODABLE:
                await _fail(call, context, InvalidArgumentError(UNDECODABLE_REQUEST))
            try:
                async for response in behavior(request, context):
                    yield response
            except asyncio.CancelledError:
                call.finish(_cancelled_code(context))
                raise
            except Exception as error:  # every failure becomes a status
                await _fail(call, context, error)
            call.finish(_final_code(context))

    return handle


def _begin(method: str, context: Context) -> Call:
    call = Call.begin(method, context.invocation_metadata(), context.peer())
    # Trailing metadata reaches every client; sending initial metadata on its own would cost
    # an extra round of work per RPC (a quarter more CPU for a light unary RPC).
    context.set_trailing_metadata(call.response_metadata)
    return call


async def _fail(call: Call, context: Context, error: Exception) -> NoReturn:
    """Answer with the status ``error`` stands for; log it; never returns."""
    if isinstance(error, grpc.aio.AbortError):
        # The handler called context.abort(): the client gets the status it chose.
        call.finish(context.code())
        raise error
    code, details = status_for(error, call.request_id)
    call.finish(code, error)
    await context.abort(code, details)


def _cancelled_code(context: Context) -> grpc.StatusCode:
    """Why grpc.aio cancelled the handler: the client's deadline passed, or it went away."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _final_code(context: Context) -> grpc.StatusCode:
    """The status the client sees for an RPC whose handler returned."""
    return context.code() or grpc.StatusCode.OK
