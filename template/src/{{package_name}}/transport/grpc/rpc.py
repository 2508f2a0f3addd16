"""What both gRPC servers record about each RPC: request id, access log line, metrics.

The interceptor core (``interceptor.py``) starts an :class:`RpcRecord` when an application
RPC starts, runs the handler inside it (``with record:``) and :meth:`RpcRecord.finish`-es it
with the final status. Health checks and reflection are infrastructure, polled every few
seconds: they get no record, no log line and no metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import grpc

from ...runtime.context import accept_request_id, bind
from ...runtime.logging import RequestLogger
from ...runtime.settings import RuntimeSettings
from .errors import is_expected
from .metrics import ACCESS_LOG_SKIPPED, MethodMetrics

REQUEST_ID_KEY = "x-request-id"
UNOBSERVED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
# gRPC reports "no deadline" as a deadline centuries away.
NO_DEADLINE = 10**8

log = RequestLogger("access")


def is_observed(method: str) -> bool:
    """Whether RPCs of ``method`` (``/package.Service/Method``) are logged and measured."""
    return not method.startswith(UNOBSERVED_SERVICES)


def traced_rpcs() -> Callable[[grpc.HandlerCallDetails], bool]:
    """Which RPCs get a server span: the observed ones (not health checks or reflection, polled
    every few seconds), but for the services ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` names
    (``package.Service``, comma-separated), which the instrumentation does not read when it is
    given a filter.
    """
    names = os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",")
    excluded = {name.strip() for name in names if name.strip()}

    def is_traced(details: grpc.HandlerCallDetails) -> bool:
        method = details.method  # /package.Service/Method, or whatever a client sent
        return is_observed(method) and method.lstrip("/").partition("/")[0] not in excluded

    return is_traced


class AccessLog:
    """Which finished RPCs get an access log line, and the line.

    Every call that failed or took ``slow`` seconds or more is logged; of the others, the fast
    OK ones, all up to ``per_second`` in a second and one in ``sample`` beyond that.
    ``rpc_server_access_log_skipped_total`` counts those left out. ``sample=1`` logs every call.
    """

    def __init__(self, per_second: int = 0, sample: int = 1, slow: float = 0.1) -> None:
        self.slow = slow
        self._fast_ok = ACCESS_LOG_SKIPPED.sample(per_second, sample)

    @classmethod
    def following(cls, settings: RuntimeSettings) -> AccessLog:
        """The access log ``settings`` ask for (``ACCESS_LOG_*``; slow: ``STALL_THRESHOLD``)."""
        return cls(
            settings.access_log_per_second, settings.access_log_sample, settings.stall_threshold
        )

    def write(
        self, record: RpcRecord, code: grpc.StatusCode, seconds: float, error: Exception | None
    ) -> None:
        fast_ok = code is grpc.StatusCode.OK and seconds < self.slow
        if fast_ok and not self._fast_ok.keep():
            return
        fields: dict[str, Any] = {
            "method": record.method,
            "status": code.name,
            "duration_ms": round(seconds * 1000, 2),
            "peer": record.context.peer(),
        }
        if error is not None and not is_expected(error):
            log.error("request", **fields, exc_info=error)
            return
        if error is not None:
            fields["reason"] = f"{type(error).__name__}: {error}"
        log.info("request", **fields)


class RpcRecord:
    """One application RPC being handled."""

    def __init__(
        self,
        method: str,
        metrics: MethodMetrics,
        access_log: AccessLog,
        context: Any,
        trace_keys: frozenset[str] = frozenset(),
    ) -> None:
        """Start recording the RPC of ``context`` (either flavour's servicer context).

        The request id is the client's ``x-request-id`` if well-formed; the caller's trace
        context is kept if ``trace_keys`` name its metadata entries.
        """
        self.started = time.perf_counter()
        self.method = method
        self.metrics = metrics
        self.access_log = access_log
        self.context = context
        request_id = None
        trace: dict[str, str] = {}
        for name, value in context.invocation_metadata() or ():
            if name == REQUEST_ID_KEY and isinstance(value, str):
                request_id = value
            elif name in trace_keys and isinstance(value, str):
                trace[name] = value
        self.request_id = accept_request_id(request_id)
        # What the server sends back: the request id it used.
        self.response_metadata = ((REQUEST_ID_KEY, self.request_id),)
        remaining = context.time_remaining()
        budget = None if remaining is None or remaining > NO_DEADLINE else remaining
        # No trace keys: OpenTelemetry's interceptor continues the caller's trace (None).
        self._bound = bind(
            self.request_id, budget=budget, caller_trace=trace if trace_keys else None
        )

    def __enter__(self) -> None:
        """While the RPC runs (``with record:``): its request id, the client's deadline and
        trace context are bound (for log lines and offloaded work), and it counts as in flight.
        A class rather than ``@contextmanager``: this runs for every RPC.
        """
        self._bound.__enter__()
        self.metrics.active.add(self)

    def __exit__(self, *_: object) -> None:
        self.metrics.active.discard(self)
        self._bound.__exit__(None, None, None)

    def finish(self, code: grpc.StatusCode, error: Exception | None = None) -> None:
        """Observe the call's duration (``metrics.py``) and write its access log line."""
        seconds = time.perf_counter() - self.started
        self.metrics.observe(code, seconds)
        self.access_log.write(self, code, seconds, error)
