"""The health service of the asyncio server (``health.py`` says what it answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from .health import LIVENESS, NOT_SERVING, SERVING, add_health_service


class AioHealth:
    """For the asyncio server: grpcio's asyncio servicer, whose methods are coroutines.

    Call :meth:`not_serving` before the server starts: the servicer begins with ``""`` SERVING.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = (health.OVERALL_HEALTH, *services)
        self._servicer = health.aio.HealthServicer()
        self._watches: set[asyncio.Task[None]] = set()
        self._ending = False

    def add_to(self, server: grpc.aio.Server) -> None:
        add_health_service(server, self._servicer.Check, self._watch)

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
