"""The access log: a line for every RPC by default. With ``ACCESS_LOG_EVERY`` N, every failed
and every slow call still gets its line, and of the fast OK calls of a method the first and
then one in N, each such line counting the calls before it that got none (``skipped``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from conftest import ServiceProcess, wait_until
from grpc_support import SERVICE, GrpcService, documents_pb2, documents_pb2_grpc, start_grpc

PING = f"{SERVICE}/Ping"
# Not a protobuf message: 0x0a announces a string longer than what follows.
GARBAGE = b"\x0a\xff\xff\xff\x0f garbage"


def test_every_call_is_logged_by_default(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_grpc(start_service)
    _ping(service, ["all-0", "all-1", "all-2"])
    wait_until(lambda: len(_lines(service, PING)) == 3, what="an access log line per call")
    lines = _lines(service, PING)
    assert [line["request_id"] for line in lines] == ["all-0", "all-1", "all-2"]
    assert all("skipped" not in line and line["status"] == "OK" for line in lines)


def test_fast_ok_calls_are_sampled_and_counted_failures_never(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service, access_log_every=3, access_log_slow=60)
    _ping(service, [f"fast-{n}" for n in range(7)])
    with service.channel() as channel:
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{PING}")
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as raised:
                raw(GARBAGE, timeout=10)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    def failed() -> list[dict[str, Any]]:
        return [line for line in _lines(service, PING) if line["status"] != "OK"]

    # The failures come last: once their lines are in, so is every line before them.
    wait_until(lambda: len(failed()) == 2, what="a line for each failed call")
    sampled = [line for line in _lines(service, PING) if line["status"] == "OK"]
    assert [(line["request_id"], line["skipped"]) for line in sampled] == [
        ("fast-0", 0),
        ("fast-3", 2),
        ("fast-6", 2),
    ]
    assert all("skipped" not in line for line in failed())


def test_slow_calls_are_always_logged(start_service: Callable[..., ServiceProcess]) -> None:
    # Every call takes at least no time: with ACCESS_LOG_SLOW 0, each one is slow.
    service = start_grpc(start_service, access_log_every=1000, access_log_slow=0)
    _ping(service, ["slow-0", "slow-1", "slow-2"])
    wait_until(lambda: len(_lines(service, PING)) == 3, what="an access log line per call")
    assert [line["request_id"] for line in _lines(service, PING)] == ["slow-0", "slow-1", "slow-2"]


def _ping(service: GrpcService, request_ids: list[str]) -> None:
    with service.channel() as channel:
        ping = documents_pb2_grpc.DocumentServiceStub(channel).Ping
        for request_id in request_ids:
            ping(documents_pb2.PingRequest(), metadata=(("x-request-id", request_id),), timeout=10)


def _lines(service: GrpcService, method: str) -> list[dict[str, Any]]:
    return [line for line in service.events("request") if line["method"] == f"/{method}"]
