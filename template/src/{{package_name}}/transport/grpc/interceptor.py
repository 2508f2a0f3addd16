"""What both gRPC servers do around every application RPC; each flavour writes only ``handle``.

grpcio asks the interceptor for each RPC's handler. Health checks and reflection pass through
untouched; an application method's handler is rebuilt around the flavour's ``handle``
(``sync_interceptors.py`` or ``aio_interceptors.py``) once, at its first call, and reused.
``handle`` does, in this order:

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

from typing import TYPE_CHECKING, Any, Protocol

import grpc

from ...runtime.context import trace_header_names
from .admission import Admission
from .errors import tolerant
from .metrics import method_metrics
from .rpc import AccessLog, RpcRecord, is_observed

if TYPE_CHECKING:
    # grpcio's stubs make the handler generic; at run time it is not (and Python 3.11 has no
    # type statement).
    Handler = grpc.RpcMethodHandler[Any, Any]


class Context(Protocol):
    """What the core reads from either flavour's servicer context."""

    def invocation_metadata(self) -> Any: ...
    def peer(self) -> str: ...
    def time_remaining(self) -> float | None: ...
    def set_trailing_metadata(self, trailing_metadata: Any) -> None: ...


class InterceptorCore:
    """Rebuilds application handlers around :meth:`handle`, once per method."""

    def __init__(
        self,
        admission: Admission,
        *,
        continue_traces: bool = False,
        access_log: AccessLog | None = None,
    ) -> None:
        self.admission = admission
        # Without OpenTelemetry's interceptor ahead (nothing is exported), the caller's trace
        # context is continued here, for log lines and offloaded work.
        self.trace_keys = trace_header_names() if continue_traces else frozenset()
        self.access_log = access_log or AccessLog()
        # method -> (the handler grpcio gave, the one rebuilt around it)
        self._rebuilt: dict[str, tuple[Handler, Handler]] = {}

    def rebuilt(self, handler: Handler, method: str) -> Handler:
        """``handler`` with its behaviour wrapped by :meth:`handle`, whatever its arity;
        health checks' and reflection's as :meth:`infrastructure` says.
        """
        known = self._rebuilt.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        # Two threads may both rebuild a method at its first calls: either result will do.
        if is_observed(method):
            wrapped = self._rebuild(handler, method)
        else:
            wrapped = self.infrastructure(handler)
        self._rebuilt[method] = (handler, wrapped)
        return wrapped

    def infrastructure(self, handler: Handler) -> Handler:
        """How health checks and reflection are served: as they are, unless a flavour says."""
        return handler

    def _rebuild(self, handler: Handler, method: str) -> Handler:
        streams = handler.request_streaming, handler.response_streaming
        kind = "_".join("stream" if streaming else "unary" for streaming in streams)
        wrapped = self.handle(getattr(handler, kind), method, streamed=handler.response_streaming)
        deserializer = handler.request_deserializer
        if not handler.request_streaming:
            deserializer = tolerant(deserializer)  # garbage: INVALID_ARGUMENT, not INTERNAL
        return handler._replace(  # type: ignore[attr-defined, no-any-return]
            **{kind: wrapped, "request_deserializer": deserializer}
        )

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


def deadline_passed(context: Context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0
