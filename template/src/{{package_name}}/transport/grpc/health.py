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

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME: str = health.SERVICE_NAME
LIVENESS = "liveness"


def add_health_service(server: grpc.Server | grpc.aio.Server, check: Any, watch: Any) -> None:
    """Register the health service, its Check and Watch served by ``check`` and ``watch``."""
    request = health_pb2.HealthCheckRequest.FromString
    response = health_pb2.HealthCheckResponse.SerializeToString
    methods = {
        "Check": grpc.unary_unary_rpc_method_handler(check, request, response),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, request, response),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, methods),))
