"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
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
        responses={
            200: {
                "content": {"text/plain": {}, "application/openmetrics-text": {}},
                "description": "Prometheus text format, or OpenMetrics (with exemplars) when "
                "the Accept header asks for it",
            }
        },
    )
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), media_type=content_type)

    return router
