"""The access log: a line for every RPC while there are fewer than ``ACCESS_LOG_PER_SECOND``
fast OK calls a second. Beyond that, every failed and every slow call still gets its line, and
of the fast OK calls one in ``ACCESS_LOG_SAMPLE``; ``rpc_server_access_log_skipped_total`` counts
those left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from conftest import ServiceProcess, wait_until
from grpc_support import SERVICE, GrpcService, documents_pb2, documents_pb2_grpc, start_grpc

PING = f"/{SERVICE}/Ping"
# Not a protobuf message: 0x0a announces a string longer than what follows.
GARBAGE = b"\x0a\xff\xff\xff\x0f garbage"


def test_every_call_of_a_quiet_service_is_logged_by_default(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service)
    _ping(service, ["all-0", "all-1", "all-2"])
    wait_until(lambda: len(_lines(service)) == 3, what="an access log line per call")
    assert [line["request_id"] for line in _lines(service)] == ["all-0", "all-1", "all-2"]
    assert service.metric("rpc_server_access_log_skipped_total") == 0


def test_a_sampled_access_log_keeps_every_failure_and_counts_what_it_leaves_out(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # Fast: quicker than the stall threshold, which no Ping reaches even on a busy machine.
    service = start_grpc(
        start_service, access_log_per_second=0, access_log_sample=3, stall_threshold=30
    )
    _ping(service, [f"fast-{n}" for n in range(7)])
    with service.channel() as channel:
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(PING)
        for n in range(2):
            with pytest.raises(grpc.RpcError) as raised:
                raw(GARBAGE, metadata=(("x-request-id", f"bad-{n}"),), timeout=10)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    def logged() -> list[str]:
        return [line["request_id"] for line in _lines(service)]

    # The failures come last: once their lines are in, so is every line before them.
    wait_until(lambda: "bad-1" in logged(), what="the access log lines of both failures")
    assert logged() == ["fast-0", "fast-3", "fast-6", "bad-0", "bad-1"]
    assert service.metric("rpc_server_access_log_skipped_total") == 4
    ok = {"rpc_method": PING.removeprefix("/"), "rpc_response_status_code": "OK"}
    assert service.metric("rpc_server_call_duration_seconds_count", **ok) == 7


def _ping(service: GrpcService, request_ids: list[str]) -> None:
    with service.channel() as channel:
        ping = documents_pb2_grpc.DocumentServiceStub(channel).Ping
        for request_id in request_ids:
            ping(documents_pb2.PingRequest(), metadata=(("x-request-id", request_id),), timeout=10)


def _lines(service: GrpcService) -> list[dict[str, Any]]:
    return [line for line in service.events("request") if line["method"] == PING]
