"""The asyncio server's interceptor: the core's sequence (``interceptor.py``) as coroutines.

Each RPC runs as its own asyncio task. Stalls are watched for the whole event loop
(``StallWatchdog.watch_loop``), not per RPC.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import StatusCode

from .admission import REJECTED
from .errors import UNDECODABLE, UNDECODABLE_REQUEST, InvalidArgumentError, status_for
from .interceptor import InterceptorCore, deadline_passed
from .rpc import RpcRecord, traced_rpcs

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


class RequestInterceptor(InterceptorCore, grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None  # grpcio answers UNIMPLEMENTED
        return self.rebuilt(handler, method)

    def handle(self, behavior: Any, method: str, *, streamed: bool) -> Any:
        # grpc.aio reuses grpc.RpcMethodHandler, whose types describe synchronous behaviours;
        # here they are coroutine functions or, for streamed responses, async generator
        # functions (or coroutine functions that call context.write()).
        if inspect.isasyncgenfunction(behavior):
            return self._async_generator(behavior, method)
        return self._coroutine(behavior, method, streamed=streamed)

    def _coroutine(self, behavior: Behavior, method: str, *, streamed: bool) -> Behavior:
        admission, begin = self.admission, self.begin

        # No async context manager here: contextlib's costs as much as the rest of the wrapper
        # together, and this runs for every RPC.
        async def handle(request: Any, context: Context) -> Any:
            if not admission.try_enter():
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REJECTED)
            try:
                record = begin(method, context)
                if streamed:  # the handler writes responses: the id goes ahead of them
                    await context.send_initial_metadata(record.response_metadata)
                with record:
                    if request is UNDECODABLE:
                        await _fail(record, context, InvalidArgumentError(UNDECODABLE_REQUEST))
                    try:
                        response = await behavior(request, context)
                    except asyncio.CancelledError:  # the deadline passed, or the client left
                        late = StatusCode.DEADLINE_EXCEEDED
                        record.finish(late if deadline_passed(context) else StatusCode.CANCELLED)
                        raise
                    except Exception as error:  # every failure becomes a status
                        await _fail(record, context, error)
                    record.finish(context.code() or grpc.StatusCode.OK)
                    return response
            finally:
                admission.leave()

        return handle

    def _async_generator(self, behavior: StreamBehavior, method: str) -> Behavior:
        async def write_each(request: Any, context: Context) -> None:
            async for response in behavior(request, context):
                await context.write(response)

        return self._coroutine(write_each, method, streamed=True)


async def _fail(record: RpcRecord, context: Context, error: Exception) -> NoReturn:
    """Answer with the status ``error`` stands for; log it; never returns."""
    if isinstance(error, grpc.aio.AbortError):
        # The handler called context.abort(): the client gets the status it chose.
        record.finish(context.code())
        raise error
    code, details = status_for(error, record.request_id)
    record.finish(code, error)
    await context.abort(code, details)


def tracing_interceptor() -> grpc.aio.ServerInterceptor:
    """Server spans for application RPCs: the asyncio twin of the thread-pool server's
    ``tracing_interceptor`` (``sync_interceptors.py``), with the same filter."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415

    traced = traced_rpcs()
    return aio_server_interceptor(filter_=traced)  # type: ignore[no-untyped-call, no-any-return]
