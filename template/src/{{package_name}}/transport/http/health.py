"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel

from ...runtime.lifecycle import Lifecycle
from .problems import problem_responses


class Health(BaseModel):
    status: str


def health_router(lifecycle: Lifecycle) -> APIRouter:
    """``/livez``, ``/readyz`` and ``/metrics``, following ``lifecycle``."""
    router = APIRouter(tags=["operations"])

    @router.get("/livez", summary="Liveness")
    async def livez() -> Health:
        """200 whenever the process can answer at all. It does not depend on readiness or on
        the offload pool: restarting a busy or draining service would only make things worse.
        """
        return Health(status="alive")

    @router.get("/readyz", summary="Readiness", responses=problem_responses(503))
    async def readyz() -> Health:
        """200 while the service wants traffic; 503 while it starts up and from the moment
        it received SIGTERM, so load balancers stop sending requests before it stops.
        """
        state = lifecycle.state
        if lifecycle.ready:
            return Health(status=state.value)
        raise HTTPException(503, f"The service is {state.value}.")

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
