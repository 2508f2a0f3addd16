"""Exit 0 if the local server answers SERVING to a standard gRPC health check, else 1.

    python -m <package>.healthcheck [--service NAME] [--address HOST:PORT] [--timeout SECONDS]

For container health checks (Docker HEALTHCHECK, the ECS task definition's healthCheck), in
exec form, where grpc_health_probe is not installed. It reads the port from the same
environment as the service, so it needs no arguments inside the service's container.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...runtime.settings import load_settings
from .listening import address
from .settings import GrpcSettings

# A server listening on every interface is reached over loopback.
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}  # noqa: S104 - compared against, not bound


def main(argv: list[str] | None = None) -> int:
    package = (__package__ or "").partition(".")[0]
    parser = argparse.ArgumentParser(prog=f"python -m {package}.healthcheck")
    parser.add_argument("--service", default="", help='service name to ask about ("": the server)')
    parser.add_argument("--address", help="HOST:PORT of the server (default: from the settings)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    target = args.address or _local_address()
    request = health_pb2.HealthCheckRequest(service=args.service)
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as error:
            detail = str(error)
            if isinstance(error, grpc.Call):  # always, for a unary call like this one
                detail = f"{error.code().name}: {error.details()}"
            print(f"{target}: {detail}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _local_address() -> str:
    settings = load_settings(GrpcSettings)
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    return address(host, settings.port)
