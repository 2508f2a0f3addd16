"""What both gRPC servers do around every application RPC; each flavour writes only ``handle``.

``api.add_services`` registers its servicers through :func:`registering`, which wraps each
method's handler once, at registration, in the flavour's ``handle`` (``sync_handlers.py`` or
``aio_handlers.py``). Not a grpcio interceptor: grpcio runs those on every call, and on the
thread-pool server on its one polling thread, which every RPC waits for. Health checks and
reflection are registered past the wrapping. ``handle`` does, in this order:

1. refuses the RPC with RESOURCE_EXHAUSTED at once past ``max_concurrent_rpcs`` (``admission.py``);
2. takes the request id from ``x-request-id`` metadata (or makes one) and sends it back in
   the trailing metadata (streamed responses: in the initial metadata too);
3. binds it and the client's deadline for every log line the handler
   writes and every call it offloads (offloaded work stops at the deadline);
4. turns an exception, or a request message that cannot be parsed, into a status
   (``errors.py``): the client gets a useful message, never internals, and the server carries on;
5. writes the access log line (``rpc.py``: every failed or slow call, and all or a sample of
   the others) and observes ``rpc_server_call_duration_seconds`` (``metrics.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import grpc

from ...runtime.context import trace_header_names
from .errors import tolerant
from .metrics import method_metrics
from .rpc import AccessLog, RpcRecord

if TYPE_CHECKING:
    # grpcio's stubs make the handler generic; at run time it is not (and Python 3.11 has no
    # type statement).
    Handler = grpc.RpcMethodHandler[Any, Any]

Wrap = Callable[["Handler", str], "Handler"]
Server = TypeVar("Server", grpc.Server, grpc.aio.Server)

_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class Context(Protocol):
    """What the core reads from either flavour's servicer context."""

    def invocation_metadata(self) -> Any: ...
    def peer(self) -> str: ...
    def time_remaining(self) -> float | None: ...
    def set_trailing_metadata(self, trailing_metadata: Any) -> None: ...


class RequestHandling:
    """Wraps application handlers in :meth:`handle`."""

    def __init__(self, *, continue_traces: bool = False, access_log: AccessLog | None = None):
        # Without OpenTelemetry's interceptor ahead (nothing is exported), the caller's trace
        # context is continued here, for log lines and offloaded work.
        self.trace_keys = trace_header_names() if continue_traces else frozenset()
        self.access_log = access_log or AccessLog()

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` with its behaviour wrapped by :meth:`handle`, whatever its arity."""
        deserializer = handler.request_deserializer
        if not handler.request_streaming:
            deserializer = tolerant(deserializer)  # garbage: INVALID_ARGUMENT, not INTERNAL
        for kind, factory in _FACTORIES.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                wrapped = self.handle(behavior, method, streamed=handler.response_streaming)
                return factory(
                    wrapped,
                    request_deserializer=deserializer,
                    response_serializer=handler.response_serializer,
                )
        raise ValueError(f"{method}: a handler without a behaviour")

    def handle(self, behavior: Any, method: str, *, streamed: bool) -> Any:
        """The flavour's wrapper around one method's behaviour."""
        raise NotImplementedError

    def begin(self, method: str, context: Context) -> RpcRecord:
        """Start the record of an RPC; its request id goes back in the trailing metadata."""
        record = RpcRecord(
            method, method_metrics(method), self.access_log, context, self.trace_keys
        )
        # Trailing metadata reaches every client; sending initial metadata on its own would
        # cost an extra round of work per RPC (a quarter more CPU for a light unary RPC).
        context.set_trailing_metadata(record.response_metadata)
        return record


def registering(server: Server, wrap: Wrap) -> Server:
    """``server`` as the code that registers services sees it: each handler registered
    through it reaches ``server`` as ``wrap(handler, "/package.Service/Method")``.

    The generated ``add_..._to_server`` functions and grpcio's reflection call only the two
    registration methods; anything else goes to ``server`` itself.
    """
    return cast(Server, _Registering(server, wrap))


class _Registering:
    def __init__(self, server: grpc.Server | grpc.aio.Server, wrap: Wrap) -> None:
        self._server = server
        self._wrap = wrap

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, Handler]
    ) -> None:
        wrapped = {name: self._wrap(h, f"/{service}/{name}") for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)

    def add_generic_rpc_handlers(self, generic: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_Generic(each, self._wrap) for each in generic])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class _Generic(grpc.GenericRpcHandler):
    """A generic handler's answers, wrapped; grpcio asks it at every call of a method that
    was not registered by name, so each method's wrapped handler is kept."""

    def __init__(self, generic: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._generic = generic
        self._wrap = wrap
        # method -> (the handler the generic one gave, its wrapped twin)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._generic.service(details)
        if handler is None:
            return None
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        # Two threads may both wrap a method at its first calls: either result will do.
        wrapped = self._wrap(handler, details.method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


def deadline_passed(context: Context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0
