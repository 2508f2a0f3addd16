"""The standard health service (``grpc.health.v1.Health``, Check and Watch) and the lifecycle.

The overall server (``""``) and each application service answer NOT_SERVING until warm-up is
done, SERVING after, and NOT_SERVING from the moment shutdown starts, for good: the servicer
ignores any later change. grpcio's servicers begin with ``""`` SERVING, so NOT_SERVING is set
before the server accepts its first connection.

This is readiness. Kubernetes (``grpc:`` probes), Envoy (``grpc_health_check``), ECS/ALB and
``python -m <package>.healthcheck`` all ask Check for ``""`` or a service name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME: str = health.SERVICE_NAME


def _names(services: Sequence[str]) -> tuple[str, ...]:
    return (health.OVERALL_HEALTH, *services)


class SyncHealth:
    """For the thread-pool server. Watch streams are non-blocking: they hold no handler thread."""

    def __init__(self, services: Sequence[str]) -> None:
        self.names = _names(services)
        self._servicer = health.HealthServicer(experimental_non_blocking=True)
        self._set_all(NOT_SERVING)

    def add_to(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def serving(self) -> None:
        self._set_all(SERVING)

    def shutting_down(self) -> None:
        """NOT_SERVING for every name, now and for the rest of the process's life."""
        self._servicer.enter_graceful_shutdown()

    def _set_all(self, status: int) -> None:
        for name in self.names:
            self._servicer.set(name, status)


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
