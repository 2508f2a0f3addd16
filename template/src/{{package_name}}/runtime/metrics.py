"""The service's Prometheus metrics, registered once in the default registry.

The transports expose the registry (``/metrics`` over HTTP, or :func:`start_metrics_server`
next to a gRPC server) and observe :data:`REQUEST_DURATION`; the rest is updated by the
runtime itself. ``docs/runtime/metrics.md`` explains each one and what to alert on.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Loop lag is small when healthy and seconds when something blocks: cover both ends.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

EVENT_LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop ran a timer callback that was due (heartbeat lag).",
    buckets=_LAG_BUCKETS,
)
STALLS = Counter(
    "stalls",
    "Stalls longer than the threshold: kind=event_loop (the loop was blocked) or handler.",
    ["kind"],
)
STALL_DURATION = Histogram(
    "stall_duration_seconds",
    "How long each stall lasted, by kind.",
    ["kind"],
    buckets=_STALL_BUCKETS,
)
WATCHDOG_STARVED = Counter(
    "stall_watchdog_starved",
    "Times the watchdog thread itself could not run (C code held the GIL); see stderr dumps.",
)
REQUEST_DURATION = Histogram(
    "request_duration_seconds",
    "Request handling time by method (route or RPC) and status.",
    ["method", "status"],
    buckets=DURATION_BUCKETS,
)
SERVICE_READY = Gauge("service_ready", "1 while the service is ready for traffic, else 0.")


def observe_request(method: str, status: str, seconds: float) -> None:
    """Record one handled request; ``method`` must be a route template or RPC name."""
    REQUEST_DURATION.labels(method=method, status=status).observe(seconds)


def start_metrics_server(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` from the default registry on a daemon thread.

    Returns the server and its thread; call ``server.shutdown()`` to stop it.
    """
    return start_http_server(port, addr=host)
