"""Server spans for application RPCs, from OpenTelemetry's gRPC instrumentation.

The interceptor extracts the caller's W3C trace context (``traceparent``, ``baggage`` metadata)
and makes the RPC's span current while the handler runs. It goes first in the server's list, so
everything after it (request id, access log, offloaded work) runs inside the span. Health checks
and reflection, polled every few seconds, are not traced.
"""

from __future__ import annotations

import grpc
import grpc.aio

from .rpc import is_observed


def _traced(details: grpc.HandlerCallDetails) -> bool:
    return is_observed(details.method)


# The instrumentation is imported only by a server that exports spans: its import costs about
# a quarter of a second of CPU at start-up. Its functions have no annotations: the types are
# declared here.


def sync_tracing_interceptor() -> grpc.ServerInterceptor:
    from opentelemetry.instrumentation.grpc import server_interceptor  # noqa: PLC0415

    made = server_interceptor(filter_=_traced)  # type: ignore[no-untyped-call]
    interceptor: grpc.ServerInterceptor = made
    return interceptor


def aio_tracing_interceptor() -> grpc.aio.ServerInterceptor:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415

    made = aio_server_interceptor(filter_=_traced)  # type: ignore[no-untyped-call]
    interceptor: grpc.aio.ServerInterceptor = made
    return interceptor
