"""The standard health service (``grpc.health.v1.Health``, Check and Watch) and the lifecycle.

The overall server (``""``) and each application service answer NOT_SERVING until warm-up is
done, SERVING after, and NOT_SERVING from the moment shutdown starts, for good: the servicer
ignores any later change. grpcio's servicers begin with ``""`` SERVING, so NOT_SERVING is set
before the server accepts its first connection.

That is readiness: Kubernetes (``grpc:`` probes), Envoy (``grpc_health_check``), ECS/ALB and
``python -m <package>.healthcheck`` ask Check for ``""`` or a service name. Liveness has a
name of its own, ``liveness``: SERVING from the start, also during warm-up, so a liveness
probe never restarts a process that is merely not ready (NOT_SERVING only once shutdown
starts, when Kubernetes no longer acts on liveness failures). Clients with
gRPC client-side health checking keep a Watch stream open instead. Those streams never end
on their own, and ``server.stop(grace)`` waits for every open RPC: ``end_watches()`` closes
them once they have reported NOT_SERVING, so that they do not hold the shutdown for the
whole grace period.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME: str = health.SERVICE_NAME
LIVENESS = "liveness"


def _names(services: Sequence[str]) -> tuple[str, ...]:
    return (health.OVERALL_HEALTH, *services)


def _add(server: grpc.Server | grpc.aio.Server, check: Any, watch: Any) -> None:
    request = health_pb2.HealthCheckRequest.FromString
    response = health_pb2.HealthCheckResponse.SerializeToString
    methods = {
        "Check": grpc.unary_unary_rpc_method_handler(check, request, response),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, request, response),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, methods),))


class SyncHealth:
    """For the thread-pool server.

    Checks run on two threads of their own, so a server whose handler threads are all busy
    with long RPCs still answers its probes. Watch streams are non-blocking: they hold no
    thread at all while they wait for a change.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = _names(services)
        self._servicer = health.HealthServicer(experimental_non_blocking=True)
        self._checks = ThreadPoolExecutor(2, thread_name_prefix="grpc-health")
        self._watches = _EndableWatches(self._servicer.Watch, self._checks)
        self._set_all(NOT_SERVING)
        self._servicer.set(LIVENESS, SERVING)

    def add_to(self, server: grpc.Server) -> None:
        _add(server, OnOwnThreads(self._servicer.Check, self._checks), self._watches)

    def serving(self) -> None:
        self._set_all(SERVING)

    def shutting_down(self) -> None:
        """NOT_SERVING for every name, now and for the rest of the process's life."""
        self._servicer.enter_graceful_shutdown()

    def end_watches(self) -> None:
        """End every open Watch stream (status OK), before the server stops."""
        self._watches.end_all()

    def _set_all(self, status: int) -> None:
        for name in self.names:
            self._servicer.set(name, status)


class OnOwnThreads:
    """A handler grpcio runs on ``experimental_thread_pool`` instead of its handler threads."""

    def __init__(self, behavior: Callable[..., Any], pool: ThreadPoolExecutor) -> None:
        self._behavior = behavior
        self.experimental_thread_pool = pool

    def __call__(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._behavior(request, context)


class _EndableWatches:
    """grpcio's non-blocking Watch, keeping hold of each stream so that it can be ended."""

    experimental_non_blocking = True  # grpcio passes a callback instead of taking a thread

    def __init__(self, watch: Callable[..., Any], pool: ThreadPoolExecutor) -> None:
        self._watch = watch
        # Starting a stream takes a thread for a moment: one of health's own, never a handler's.
        self.experimental_thread_pool = pool
        self._lock = threading.Lock()
        self._open: set[_Stream] = set()

    def __call__(
        self, request: Any, context: grpc.ServicerContext, send_response_callback: Any
    ) -> Any:
        stream = _Stream(send_response_callback)
        with self._lock:
            self._open.add(stream)
        context.add_callback(lambda: self._forget(stream))
        return self._watch(request, context, stream.send)

    def end_all(self) -> None:
        with self._lock:
            streams, self._open = self._open, set()
        for stream in streams:
            stream.send(None)

    def _forget(self, stream: _Stream) -> None:
        with self._lock:
            self._open.discard(stream)


class _Stream:
    """One Watch stream's send callback, made safe to end twice (grpcio's is not)."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._ended = False

    def send(self, response: Any) -> None:
        """Send ``response``; ``None`` ends the stream. Nothing is sent after the end."""
        with self._lock:
            if self._ended:
                return
            self._ended = response is None
            self._send(response)


class AioHealth:
    """For the asyncio server: grpcio's asyncio servicer, whose methods are coroutines.

    Call :meth:`not_serving` before the server starts: the servicer begins with ``""`` SERVING.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = _names(services)
        self._servicer = health.aio.HealthServicer()
        self._watches: set[asyncio.Task[None]] = set()
        self._ending = False

    def add_to(self, server: grpc.aio.Server) -> None:
        _add(server, self._servicer.Check, self._watch)

    async def not_serving(self) -> None:
        await self._set_all(NOT_SERVING)
        await self._servicer.set(LIVENESS, SERVING)

    async def serving(self) -> None:
        await self._set_all(SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING for every name, now and for the rest of the process's life."""
        await self._servicer.enter_graceful_shutdown()

    def end_watches(self) -> None:
        """End every open Watch stream (status OK), before the server stops."""
        self._ending = True
        for watching in self._watches:
            watching.cancel()

    async def _watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watching = asyncio.ensure_future(self._servicer.Watch(request, context))
        self._watches.add(watching)
        try:
            await watching
        except asyncio.CancelledError:
            if not (self._ending and watching.cancelled()):
                raise  # the client went away, or the server cancels this RPC
        finally:
            watching.cancel()
            self._watches.discard(watching)

    async def _set_all(self, status: int) -> None:
        for name in self.names:
            await self._servicer.set(name, status)
