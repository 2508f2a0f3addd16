"""The RPC metrics, named and labelled after OpenTelemetry's semantic conventions.

``rpc.server.call.duration`` (seconds) is spelled as OpenTelemetry's Prometheus exporter spells
it: ``rpc_server_call_duration_seconds``, with the labels ``rpc_system_name`` (``grpc``),
``rpc_method`` (``package.Service/Method``), ``rpc_response_status_code`` (``OK``,
``DEADLINE_EXCEEDED``, ...) and ``error_type`` (the status code when gRPC's conventions count
it as a server error, empty otherwise). ``rpc_server_active_calls`` counts the RPCs being
handled, with the same names for the method. ``rpc_server_access_log_skipped_total`` counts
the calls the access log's sampling leaves out.
"""

from __future__ import annotations

import functools

import grpc
from prometheus_client import Gauge

from ...runtime.metrics import RequestHistogram, SkippedCounter, request_exemplar

SYSTEM = "grpc"

CALL_DURATION = RequestHistogram(
    "rpc_server_call_duration_seconds",
    "Duration of incoming RPCs.",
    ("rpc_system_name", "rpc_method", "rpc_response_status_code", "error_type"),
)
ACTIVE_CALLS = Gauge(
    "rpc_server_active_calls",
    "RPCs accepted by the server and not finished yet.",
    ["rpc_system_name", "rpc_method"],
)

ACCESS_LOG_SKIPPED = SkippedCounter(
    "rpc_server_access_log_skipped",
    "Fast OK calls left out of the access log (beyond ACCESS_LOG_PER_SECOND).",
)

# The codes that mean the server failed; the others say something about the request.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class MethodMetrics:
    """The metrics of one RPC method, the label values of each status made once, then reused."""

    def __init__(self, method: str) -> None:
        self.name = method.removeprefix("/")  # the path is "/package.Service/Method"
        # The calls in flight, counted when scraped: adding to and removing from a set takes
        # no lock, where a gauge's inc() and dec() take one each, on every call.
        self.active = _active.setdefault(self.name, set())  # one set per method, however made
        active = ACTIVE_CALLS.labels(rpc_system_name=SYSTEM, rpc_method=self.name)
        active.set_function(self.active.__len__)
        self._labels: dict[grpc.StatusCode, tuple[str, ...]] = {}

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        """One call's duration and final status; with a sampled trace, the call's trace and
        span ids go with it as an exemplar.
        """
        labels = self._labels.get(code)
        if labels is None:
            error_type = code.name if code in SERVER_ERRORS else ""
            labels = self._labels[code] = (SYSTEM, self.name, code.name, error_type)
        CALL_DURATION.observe(labels, seconds, request_exemplar())


_active: dict[str, set[object]] = {}
# The metrics of a method (``/package.Service/Method``), made at its first call; two threads
# making them at once is harmless, as both share the method's set of calls in flight.
method_metrics = functools.cache(MethodMetrics)
