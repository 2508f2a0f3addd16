"""What both gRPC servers record about each RPC: request id, access log line, metrics.

The interceptor core (``interceptor.py``) starts an :class:`RpcRecord` when an application
RPC starts, runs the handler inside :meth:`RpcRecord.scope` and :meth:`RpcRecord.finish`-es it
with the final status. Health checks and reflection are infrastructure, polled every few
seconds: they get no record, no log line and no metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from ...runtime.context import accept_request_id, bind, continue_trace, deadline_after
from ...runtime.logging import get_logger
from .errors import is_expected
from .metrics import MethodMetrics, method_metrics

REQUEST_ID_KEY = "x-request-id"
UNOBSERVED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
# gRPC reports "no deadline" as a deadline centuries away.
NO_DEADLINE = 10**8

log = get_logger("access")


def is_observed(method: str) -> bool:
    """Whether RPCs of ``method`` (``/package.Service/Method``) are logged and measured."""
    return not method.startswith(UNOBSERVED_SERVICES)


def _read(
    metadata: Iterable[tuple[str, str | bytes]] | None, trace_keys: frozenset[str]
) -> tuple[str | None, dict[str, str]]:
    """The ``x-request-id`` and the trace context entries (``trace_keys``) of ``metadata``."""
    request_id = None
    trace: dict[str, str] = {}
    for name, value in metadata or ():
        if not isinstance(value, str):
            continue
        if name == REQUEST_ID_KEY:
            request_id = value
        elif name in trace_keys:
            trace[name] = value
    return request_id, trace


@dataclass
class RpcRecord:
    """One application RPC being handled."""

    method: str
    request_id: str
    peer: str
    metrics: MethodMetrics
    time_remaining: float | None = None
    trace: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(
        cls,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        peer: str,
        time_remaining: float | None,
        trace_keys: frozenset[str] = frozenset(),
    ) -> RpcRecord:
        """Start recording; the request id is the client's ``x-request-id`` if well-formed.
        The caller's trace context is kept if ``trace_keys`` name its metadata entries.
        """
        request_id, trace = _read(metadata, trace_keys)
        return cls(
            method=method,
            request_id=accept_request_id(request_id),
            peer=peer,
            metrics=method_metrics(method),
            time_remaining=None
            if time_remaining is None or time_remaining > NO_DEADLINE
            else time_remaining,
            trace=trace,
        )

    @property
    def response_metadata(self) -> tuple[tuple[str, str]]:
        """What the server sends back: the request id it used."""
        return ((REQUEST_ID_KEY, self.request_id),)

    @contextmanager
    def scope(self) -> Iterator[None]:
        """While the RPC runs: its request id, the client's deadline and trace context are
        bound (for log lines and offloaded work), and it counts as in flight.
        """
        with (
            continue_trace(self.trace),
            bind(self.request_id),
            deadline_after(self.time_remaining),
            self.metrics.active.track_inprogress(),
        ):
            yield

    def finish(self, code: grpc.StatusCode, error: Exception | None = None) -> None:
        """Write the access log line and observe the call's duration (``metrics.py``)."""
        seconds = time.perf_counter() - self.started
        self.metrics.observe(code, seconds)
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
