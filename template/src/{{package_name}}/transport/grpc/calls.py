"""What both gRPC servers record about each RPC: request id, access log line, metrics.

The interceptors (``sync_interceptors.py`` or ``aio_interceptors.py``) create a :class:`Call`
when an RPC starts, run the handler inside :meth:`Call.scope` and :meth:`Call.finish` it with
the final status. Health checks and reflection are infrastructure, polled every few seconds:
they get no log line and no metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Gauge

from ...runtime.context import accept_request_id, accept_traceparent, bind
from ...runtime.logging import get_logger
from ...runtime.metrics import observe_request
from .errors import is_expected

REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"
UNOBSERVED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")

log = get_logger("access")

REQUESTS_IN_FLIGHT = Gauge(
    "requests_in_flight", "RPCs accepted by the server and not finished yet, by method.", ["method"]
)


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


def is_observed(method: str) -> bool:
    """Whether RPCs of ``method`` (``/package.Service/Method``) are logged and measured."""
    return not method.startswith(UNOBSERVED_SERVICES)


def _first(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key and isinstance(value, str):
            return value
    return None


@dataclass
class Call:
    """One RPC being handled."""

    method: str
    request_id: str
    traceparent: str | None
    peer: str
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(
        cls, method: str, metadata: Iterable[tuple[str, str | bytes]] | None, peer: str
    ) -> Call:
        """Start recording; the request id is the client's ``x-request-id`` if well-formed."""
        return cls(
            method=method,
            request_id=accept_request_id(_first(metadata, REQUEST_ID_KEY)),
            traceparent=accept_traceparent(_first(metadata, TRACEPARENT_KEY)),
            peer=peer,
        )

    @property
    def response_metadata(self) -> tuple[tuple[str, str]]:
        """What the server sends back: the request id it used."""
        return ((REQUEST_ID_KEY, self.request_id),)

    @contextmanager
    def scope(self) -> Iterator[None]:
        """While the RPC runs: its request id is bound for log lines, and it counts as in flight."""
        in_flight = REQUESTS_IN_FLIGHT.labels(method=self.method)
        with bind(self.request_id, self.traceparent), in_flight.track_inprogress():
            yield

    def finish(self, code: grpc.StatusCode, error: Exception | None = None) -> None:
        """Write the access log line and observe the latency histogram."""
        seconds = time.perf_counter() - self.started
        observe_request(self.method, code.name, seconds)
        fields: dict[str, object] = {
            "method": self.method,
            "status": code.name,
            "duration_ms": round(seconds * 1000, 2),
            "peer": self.peer,
        }
        if error is not None and not is_expected(error):
            log.error("request", **fields, exc_info=error)
            return
        if error is not None:
            fields["reason"] = f"{type(error).__name__}: {error}"
        log.info("request", **fields)
