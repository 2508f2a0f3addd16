"""Which gRPC status each failure of a handler becomes, and what the client is told.

A client gets a status it can act on and a message without internals: no exception text of
unexpected errors, no stack trace. The full story goes to the log, under the request id the
client also receives, so the two can be matched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from ...runtime.offload import OffloadCancelled, OffloadRejected, OffloadTimeout, WorkerCrashed


class InvalidArgumentError(Exception):
    """Raise it from a handler for a bad request: the client gets INVALID_ARGUMENT and the
    message, so say what is wrong and how to fix it (and never echo secrets from the input).
    """


UNDECODABLE_REQUEST = "the request is not a valid message of this method's request type"


class _Undecodable:
    """Stands in for a request message that could not be parsed."""

    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE: Any = _Undecodable()


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, but garbage gives :data:`UNDECODABLE` instead of an exception.

    grpcio answers a request it cannot parse with INTERNAL, which reads like a server bug and
    counts against error budgets; the interceptors answer INVALID_ARGUMENT instead.
    """
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError, or whatever a custom codec raises
            return UNDECODABLE

    return deserialize


def status_for(error: Exception, request_id: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception a handler raised."""
    if isinstance(error, InvalidArgumentError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, OffloadRejected):
        # Like HTTP 503 + Retry-After: the client may retry later, with backoff.
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "the server is busy; retry later with backoff"
    if isinstance(error, OffloadCancelled):
        # The RPC ended first (cancelled, or its deadline passed): the client has its status.
        return grpc.StatusCode.CANCELLED, "the call was cancelled"
    if isinstance(error, OffloadTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the work did not finish within its time limit"
    if isinstance(error, WorkerCrashed):
        # Not UNAVAILABLE: the request itself may be what killed the worker, so a blind
        # retry could do it again.
        return grpc.StatusCode.INTERNAL, f"the worker handling request {request_id} died"
    return grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"


def is_expected(error: Exception) -> bool:
    """Whether ``error`` is an ordinary outcome (logged briefly) rather than a bug (traceback)."""
    return isinstance(
        error, InvalidArgumentError | OffloadRejected | OffloadTimeout | OffloadCancelled
    )
