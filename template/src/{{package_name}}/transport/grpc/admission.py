"""How many application RPCs the server takes on at once; health and reflection never count.

grpcio's own ``maximum_concurrent_rpcs`` counts every RPC, health checks and open Watch streams
included: at the limit, readiness and liveness answered RESOURCE_EXHAUSTED too, and a load
balancer or kubelet took a merely busy server for a dead one. This limit counts application
RPCs only; past it they are answered RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

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


class AdmittedThreads(ThreadPoolExecutor):
    """The thread-pool server's handler threads, admitting each RPC as grpcio hands it over.

    grpcio submits one job per RPC, from its polling thread, once it has found the method's
    handler; health checks and reflection go to threads of their own instead, so every job
    here is an application RPC. Admitted, it runs here and gives its place back when it ends,
    whatever happens to the call. Past the limit, it runs on a thread of :data:`refusing`,
    where the service's handler answers RESOURCE_EXHAUSTED without waiting for a handler
    thread (:func:`is_refused`).
    """

    def __init__(self, admission: Admission, threads: int) -> None:
        super().__init__(threads, thread_name_prefix="grpc-handler")
        self.admission = admission
        self.refusing = ThreadPoolExecutor(2, "grpc-refuse", initializer=_refuse_here)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if not self.admission.try_enter():
            return self.refusing.submit(fn, *args, **kwargs)
        return super().submit(self._then_leave, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        self.refusing.shutdown(wait, cancel_futures=cancel_futures)

    def _then_leave(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            self.admission.leave()


_thread = threading.local()


def _refuse_here() -> None:
    _thread.refusing = True


def is_refused() -> bool:
    """Whether the RPC being handled on this thread is past the limit (see AdmittedThreads)."""
    return getattr(_thread, "refusing", False)
