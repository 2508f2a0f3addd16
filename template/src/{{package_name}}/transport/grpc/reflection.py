"""gRPC server reflection: lets grpcurl, Postman or evans call the service without .proto files.

grpcio-reflection implements only ``grpc.reflection.v1alpha`` (clients such as grpcurl fall
back to it). Reflection describes every registered message type, which some teams do not want
exposed in production: the ``reflection`` setting turns it off.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection

from .health import SERVICE_NAME as HEALTH_SERVICE_NAME

SERVICE_NAME: str = reflection.SERVICE_NAME


def enable_reflection(server: grpc.Server | grpc.aio.Server, services: Sequence[str]) -> None:
    """Serve reflection for ``services``, the health service and reflection itself."""
    reflection.enable_server_reflection((*services, HEALTH_SERVICE_NAME, SERVICE_NAME), server)
