"""Health is never shed: past ``max_concurrent_rpcs`` application RPCs are refused at once,
while health checks, open Watch streams, the liveness service and reflection are answered.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import ServiceProcess, wait_until
from grpc_support import (
    SERVICE,
    THREADED,
    costly_validations,
    documents_pb2,
    documents_pb2_grpc,
    start_grpc_with_one_worker,
)

WATCHES = 20


def test_a_saturated_server_still_answers_health_liveness_and_reflection(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # On the thread-pool server the slow RPCs take every handler thread too: a refusal must
    # not wait for one. (grpc.aio has no handler threads.)
    threads = {"handler_threads": 2} if THREADED else {}
    service = start_grpc_with_one_worker(start_service, max_concurrent_rpcs=2, **threads)
    if THREADED:  # what this test sets up is what the server warns of at start-up
        warning = service.wait_event("handler_threads_too_few")
        assert (warning["handler_threads"], warning["offload_capacity"]) == (2, 2)
    validate = f"{SERVICE}/Validate"
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        watches = [health.Watch(request, timeout=60) for _ in range(WATCHES)]
        serving = health_pb2.HealthCheckResponse.SERVING
        assert all(next(watch).status == serving for watch in watches)
        slow = costly_validations(stub, 3.0, timeout=120)
        wait_until(
            lambda: service.metric("rpc_server_active_calls", rpc_method=validate) == 2,
            what="both slow RPCs to be in flight",
        )

        with pytest.raises(grpc.RpcError) as refused:
            stub.Ping(documents_pb2.PingRequest(), timeout=10)
        assert isinstance(refused.value, grpc.Call)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

        assert service.health() == "SERVING"
        assert service.health("liveness") == "SERVING"
        assert service.health(SERVICE) == "SERVING"
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        listed = {s.name for s in answers[0].list_services_response.service}
        assert SERVICE in listed
        assert not any(future.done() for future in slow), "the slow RPCs ended too soon"

        assert all(future.result().valid for future in slow)
        for watch in watches:
            watch.cancel()
    with service.channel() as channel:  # and the places are given back
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        assert stub.Ping(documents_pb2.PingRequest(), timeout=10).request_id
