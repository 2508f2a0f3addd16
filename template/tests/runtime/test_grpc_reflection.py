"""Server reflection, seen by clients that have no .proto files: grpcurl and grpcio's own client."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from conftest import ServiceProcess
from grpc_support import GRPCURL, SERVICE, GrpcService, start_grpc

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def grpcurl(
    service: GrpcService, *command: str, flags: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``grpcurl [flags] ADDRESS command...`` against ``service``; it has no .proto files."""
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "20", *flags, service.target, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_grpcurl_lists_describes_and_calls_without_proto_files(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service)

    listed = grpcurl(service, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {SERVICE, HEALTH, REFLECTION}

    described = grpcurl(service, "describe")
    assert described.returncode == 0, described.stderr
    assert f"{SERVICE} is a service" in described.stdout
    assert "rpc Validate" in described.stdout
    assert "rpc Ping" in described.stdout

    message = grpcurl(service, "describe", f"{SERVICE.rsplit('.', 1)[0]}.ValidateRequest")
    assert "string document_json = 1;" in message.stdout, message.stderr

    called = grpcurl(service, f"{SERVICE}/Ping", flags=["-d", "{}", "-H", "x-request-id: grpc-1"])
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"request_id": "grpc-1"}

    health = grpcurl(service, f"{HEALTH}/Check", flags=["-d", '{"service": ""}'])
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_grpcio_reflection_client_resolves_the_services(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service)
    with service.channel() as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {SERVICE, HEALTH, REFLECTION}
        pool = DescriptorPool(database)
        descriptor = pool.FindServiceByName(SERVICE)
        methods = {method.name: method for method in descriptor.methods}
        assert {"Validate", "Ping"} <= set(methods)  # and the RPCs a service adds
        assert methods["Validate"].input_type.fields_by_name["document_json"].type == (
            methods["Validate"].input_type.fields_by_name["document_json"].TYPE_STRING
        )


def test_reflection_can_be_switched_off(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_grpc(start_service, reflection=False)

    listed = grpcurl(service, "list")
    assert listed.returncode != 0
    assert "does not support the reflection API" in listed.stderr

    with service.channel() as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        with pytest.raises(grpc.RpcError) as raised:
            database.get_services()
    assert isinstance(raised.value, grpc.Call)
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert service.health() == "SERVING"
