"""The generated service's loop heartbeat, for the bare references: measurement only.

A timer every 100 ms; how late it fires goes into ``eventloop_lag_seconds`` (same buckets as
the service's), in a registry of its own that the bare servers serve at ``/metrics``.
"""

import asyncio

from prometheus_client import CollectorRegistry, Histogram

REGISTRY = CollectorRegistry()
LAG = Histogram(
    "eventloop_lag_seconds",
    "How late the event loop ran a timer callback that was due.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)


async def heartbeat(interval: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        LAG.observe(max(0.0, loop.time() - due))
