"""The standard health service (``grpc.health.v1.Health``, Check and Watch) and the lifecycle.

The overall server (``""``) and each application service answer NOT_SERVING until warm-up is
done, SERVING after, and NOT_SERVING from the moment shutdown starts, for good: the servicer
ignores any later change. grpcio's servicers begin with ``""`` SERVING, so NOT_SERVING is set
before the server accepts its first connection.

This is readiness. Kubernetes (``grpc:`` probes), Envoy (``grpc_health_check``), ECS/ALB and
``python -m <package>.healthcheck`` all ask Check for ``""`` or a service name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME: str = health.SERVICE_NAME


def _names(services: Sequence[str]) -> tuple[str, ...]:
    return (health.OVERALL_HEALTH, *services)


class SyncHealth:
    """For the thread-pool server.

    Checks run on two threads of their own, so a server whose handler threads are all busy
    with long RPCs still answers its probes. Watch streams are non-blocking: they hold no
    thread at all while they wait for a change.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = _names(services)
        self._servicer = health.HealthServicer(experimental_non_blocking=True)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="grpc-health")
        self._set_all(NOT_SERVING)

    def add_to(self, server: grpc.Server) -> None:
        check = grpc.unary_unary_rpc_method_handler(
            _OnOwnThreads(self._servicer.Check, self._pool),
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        watch = grpc.unary_stream_rpc_method_handler(
            self._servicer.Watch,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        methods = {"Check": check, "Watch": watch}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, methods),)
        )

    def serving(self) -> None:
        self._set_all(SERVING)

    def shutting_down(self) -> None:
        """NOT_SERVING for every name, now and for the rest of the process's life."""
        self._servicer.enter_graceful_shutdown()

    def _set_all(self, status: int) -> None:
        for name in self.names:
            self._servicer.set(name, status)


class _OnOwnThreads:
    """A handler grpcio runs on ``experimental_thread_pool`` instead of its handler threads."""

    def __init__(self, behavior: Callable[..., Any], pool: ThreadPoolExecutor) -> None:
        self._behavior = behavior
        self.experimental_thread_pool = pool

    def __call__(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._behavior(request, context)


class AioHealth:
    """For the asyncio server: grpcio's asyncio servicer, whose methods are coroutines.

    Call :meth:`not_serving` before the server starts: the servicer begins with ``""`` SERVING.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = _names(services)
        self._servicer = health.aio.HealthServicer()

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def not_serving(self) -> None:
        await self._set_all(NOT_SERVING)

    async def serving(self) -> None:
        await self._set_all(SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING for every name, now and for the rest of the process's life."""
        await self._servicer.enter_graceful_shutdown()

    async def _set_all(self, status: int) -> None:
        for name in self.names:
            await self._servicer.set(name, status)
