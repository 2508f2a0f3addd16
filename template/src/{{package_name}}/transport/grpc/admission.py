"""How many application RPCs the server takes on at once; health and reflection never count.

grpcio's own ``maximum_concurrent_rpcs`` counts every RPC, health checks and open Watch streams
included: at the limit, readiness and liveness answered RESOURCE_EXHAUSTED too, and a load
balancer or kubelet took a merely busy server for a dead one. This limit is applied by the
interceptors to application RPCs only; past it they are answered RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import threading

REJECTED = "the server is at its limit of concurrent RPCs; retry later with backoff"


class Admission:
    """A counter of application RPCs in flight with a limit; safe from any thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        """Take a place; ``False`` (and nothing taken) if all ``limit`` are taken."""
        with self._lock:
            if self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
