"""The gRPC API over a real connection: answers, request ids, and bad input of every kind.

Each bad request must get a proper status, and the server must go on serving afterwards.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator

import grpc
import pytest

from conftest import ServiceProcess, metric_value, service_env, wait_until
from grpc_support import (
    FAIL_METHOD,
    LARGE_MESSAGES,
    LEAK_MARKER,
    SERVICE,
    GrpcService,
    costly_validations,
    document_costing,
    documents_pb2,
    documents_pb2_grpc,
    in_process_channel,
    start_failing_grpc,
    start_grpc,
    start_grpc_with_one_worker,
)

FRESH_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def service() -> Iterator[GrpcService]:
    """One service for the tests that do not need their own settings."""
    started: list[ServiceProcess] = []

    def start(**settings: object) -> ServiceProcess:
        started.append(ServiceProcess(service_env(**settings)))
        return started[-1]

    yield start_grpc(start, max_message_size=64 * 1024)
    for process in started:
        process.stop()


@pytest.fixture
def stub(service: GrpcService) -> Iterator[documents_pb2_grpc.DocumentServiceStub]:
    with service.channel() as channel:
        yield documents_pb2_grpc.DocumentServiceStub(channel)


def still_serving(service: GrpcService) -> None:
    """The server answers a normal request after whatever the test did to it."""
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        assert stub.Ping(documents_pb2.PingRequest(), timeout=10).request_id
    assert service.health() == "SERVING"


def rpc_error(call: Callable[[], object]) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    assert isinstance(error, grpc.Call)
    return error


def test_in_process_validate_and_ping() -> None:
    """Quick, without a subprocess: the servicers served in this process."""
    with in_process_channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        answer = stub.Validate(documents_pb2.ValidateRequest(document_json='{"email": "ada@"}'))
        assert not answer.valid
        assert [problem.path for problem in answer.problems] == ["/email"]
        metadata = (("x-request-id", "req-1"),)
        pong, call = stub.Ping.with_call(documents_pb2.PingRequest(), metadata=metadata)
        assert pong.request_id == "req-1"
        assert ("x-request-id", "req-1") in call.trailing_metadata()


def test_validate_lists_the_problems_of_a_document(
    stub: documents_pb2_grpc.DocumentServiceStub,
) -> None:
    document = {"name": "Ada", "contact": {"email": "not an address"}}
    request = documents_pb2.ValidateRequest(document_json=json.dumps(document))
    response = stub.Validate(request, timeout=30)
    assert not response.valid
    assert [(p.path, p.rule) for p in response.problems] == [("/contact/email", "email-format")]

    clean = documents_pb2.ValidateRequest(document_json=json.dumps({"name": "Ada"}))
    assert stub.Validate(clean, timeout=30).valid


def test_the_request_id_is_taken_from_metadata_and_echoed(
    stub: documents_pb2_grpc.DocumentServiceStub, service: GrpcService
) -> None:
    response, call = stub.Ping.with_call(
        documents_pb2.PingRequest(), metadata=(("x-request-id", "order-42.retry-1"),), timeout=10
    )
    assert response.request_id == "order-42.retry-1"
    assert ("x-request-id", "order-42.retry-1") in call.trailing_metadata()
    line = service.process.stdout.wait_for('"request_id":"order-42.retry-1"')
    assert json.loads(line)["method"] == f"/{SERVICE}/Ping"


def test_a_call_without_request_id_gets_a_fresh_one(
    stub: documents_pb2_grpc.DocumentServiceStub,
) -> None:
    response, call = stub.Ping.with_call(documents_pb2.PingRequest(), timeout=10)
    assert FRESH_ID.fullmatch(response.request_id)
    assert ("x-request-id", response.request_id) in call.trailing_metadata()


@pytest.mark.parametrize(
    "hostile",
    ["<script>alert(1)</script>", "a" * 1000, "id with spaces", "../../etc/passwd;rm -rf /"],
)
def test_a_hostile_request_id_is_replaced_not_echoed(
    stub: documents_pb2_grpc.DocumentServiceStub, service: GrpcService, hostile: str
) -> None:
    response, call = stub.Ping.with_call(
        documents_pb2.PingRequest(), metadata=(("x-request-id", hostile),), timeout=10
    )
    assert FRESH_ID.fullmatch(response.request_id)
    assert ("x-request-id", response.request_id) in call.trailing_metadata()
    assert hostile not in service.process.output()
    still_serving(service)


@pytest.mark.parametrize(
    ("document_json", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2, 3]", "must be a JSON object"),
        ('"a string"', "must be a JSON object"),
    ],
)
def test_an_invalid_document_is_invalid_argument_with_a_useful_message(
    stub: documents_pb2_grpc.DocumentServiceStub,
    service: GrpcService,
    document_json: str,
    message: str,
) -> None:
    request = documents_pb2.ValidateRequest(document_json=document_json)
    error = rpc_error(lambda: stub.Validate(request, timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    still_serving(service)


def test_garbage_bytes_instead_of_a_message_are_invalid_argument(service: GrpcService) -> None:
    with service.channel() as channel:
        # No serializers: the bytes go on the wire as they are. 0x0a is field 1 (a string)
        # announcing more bytes than follow, so no protobuf parser accepts it.
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/Validate"
        )
        error = rpc_error(lambda: raw(b"\x0a\xff\xff\xff\x0f garbage", timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in error.details()
    still_serving(service)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x99\xff\xff\xff\xff\xff" * 50,
    ],
    ids=["http1", "tls-hello", "broken-http2-frames"],
)
def test_garbage_on_the_wire_closes_that_connection_only(
    service: GrpcService, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(garbage)
        while sock.recv(65536):  # until the server closes the connection
            pass
    still_serving(service)


def test_a_message_over_the_limit_is_resource_exhausted(
    stub: documents_pb2_grpc.DocumentServiceStub, service: GrpcService
) -> None:
    # The service's limit is 64 KiB here (max_message_size).
    request = documents_pb2.ValidateRequest(document_json=json.dumps({"text": "x" * 100_000}))
    error = rpc_error(lambda: stub.Validate(request, timeout=10))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving(service)


def test_an_unknown_method_is_unimplemented(service: GrpcService) -> None:
    with service.channel() as channel:
        for method in (f"/{SERVICE}/NoSuchMethod", "/no.such.Service/Ping"):
            unknown: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
            error = rpc_error(lambda: unknown(b"", timeout=10))  # noqa: B023 - called at once
            assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    still_serving(service)


def test_metrics_count_rpcs_by_method_and_status(
    stub: documents_pb2_grpc.DocumentServiceStub, service: GrpcService
) -> None:
    """OpenTelemetry's rpc.server.call.duration, spelled the Prometheus way."""
    duration = "rpc_server_call_duration_seconds"
    validate = {"rpc_system_name": "grpc", "rpc_method": f"{SERVICE}/Validate"}
    ok = {**validate, "rpc_response_status_code": "OK", "error_type": ""}
    # A bad document is the client's error, not the server's: no error_type.
    invalid = {**validate, "rpc_response_status_code": "INVALID_ARGUMENT", "error_type": ""}
    ok_before = service.metric(f"{duration}_count", **ok)
    invalid_before = service.metric(f"{duration}_count", **invalid)

    stub.Validate(documents_pb2.ValidateRequest(document_json='{"name": "Ada"}'), timeout=10)
    invalid_request = documents_pb2.ValidateRequest(document_json="{not json")
    rpc_error(lambda: stub.Validate(invalid_request, timeout=10))
    with service.channel() as channel:
        unknown: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/NoSuchMethod"
        )
        rpc_error(lambda: unknown(b"", timeout=10))

    content_type, text = service.scrape()
    assert content_type.startswith("text/plain")
    assert f"# TYPE {duration} histogram" in text
    assert metric_value(text, f"{duration}_count", **ok) == ok_before + 1
    assert metric_value(text, f"{duration}_bucket", **ok, le="+Inf") == ok_before + 1
    assert metric_value(text, f"{duration}_count", **invalid) == invalid_before + 1
    assert metric_value(text, "rpc_server_active_calls", **validate) == 0
    # A method the server does not have adds no label value.
    assert "NoSuchMethod" not in text


def test_a_bug_is_internal_with_the_request_id_and_no_internals() -> None:
    service = start_failing_grpc()
    try:
        with service.channel() as channel:
            fail: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(FAIL_METHOD)
            error = rpc_error(lambda: fail(b"", metadata=(("x-request-id", "bug-1"),), timeout=10))
        assert error.code() is grpc.StatusCode.INTERNAL
        assert "bug-1" in error.details()
        assert LEAK_MARKER not in error.details()
        assert ("x-request-id", "bug-1") in error.trailing_metadata()
        # The traceback is in the log, under the same request id, for whoever investigates.
        line = service.process.stdout.wait_for(f'"request_id":"bug-1".*{LEAK_MARKER}')
        assert json.loads(line)["status"] == "INTERNAL"
        # A server error: error_type names the status code.
        failed_calls = {"rpc_method": FAIL_METHOD.removeprefix("/"), "error_type": "INTERNAL"}
        assert service.metric("rpc_server_call_duration_seconds_count", **failed_calls) == 1
        still_serving(service)
    finally:
        service.process.stop()


def test_a_full_offload_pool_is_resource_exhausted(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(
        start_service, offload_workers=1, offload_queue=0, max_message_size=LARGE_MESSAGES
    )
    heavy = documents_pb2.ValidateRequest(document_json=document_costing(2.0))
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        running = stub.Validate.future(heavy, timeout=60)
        executor = service.offload_executor()
        wait_until(
            lambda: service.metric("offload_in_flight", executor=executor) == 1,
            what="the heavy validation to occupy the only worker",
        )
        error = rpc_error(lambda: stub.Validate(heavy, timeout=10))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry later" in error.details()
        assert running.result().valid
    still_serving(service)


def test_past_max_concurrent_rpcs_the_server_answers_resource_exhausted(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc_with_one_worker(start_service, max_concurrent_rpcs=2)
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        in_flight = costly_validations(stub, 1.0, timeout=60)
        wait_until(lambda: service.offload_calls() == 2, what="two RPCs in flight")
        error = rpc_error(lambda: stub.Ping(documents_pb2.PingRequest(), timeout=10))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert all(future.result().valid for future in in_flight)
    still_serving(service)


def test_other_rpcs_are_answered_while_a_heavy_validation_runs(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service, offload_workers=1, max_message_size=LARGE_MESSAGES)
    heavy = documents_pb2.ValidateRequest(document_json=document_costing(3.0))
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        validation = stub.Validate.future(heavy, timeout=120)
        executor = service.offload_executor()
        wait_until(
            lambda: service.metric("offload_in_flight", executor=executor) == 1,
            what="the heavy validation to start",
        )
        for _ in range(10):
            stub.Ping(documents_pb2.PingRequest(), timeout=30)
        assert not validation.done(), "the pings waited for the heavy validation"
        assert validation.result().valid
