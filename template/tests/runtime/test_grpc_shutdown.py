"""Shutdown under load: SIGTERM -> NOT_SERVING -> drain delay -> stop(grace) -> exit 0.

Every RPC the server received before it began to stop must complete normally, open health
Watch streams must not hold the stop for the whole grace, and a second signal must end the
process at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import datetime

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ServiceProcess, wait_until
from grpc_support import (
    LARGE_MESSAGES,
    SERVICE,
    THREADED,
    document_costing,
    documents_pb2,
    documents_pb2_grpc,
    start_grpc,
)


def test_sigterm_under_load_lets_every_rpc_in_flight_finish_and_exits_0(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # Every RPC waiting for the offload pool holds a handler thread of the thread-pool server:
    # without enough of them, new RPCs would queue behind the validations.
    threads: dict[str, object] = {"handler_threads": 400} if THREADED else {}
    service = start_grpc(
        start_service,
        drain_delay=2,
        shutdown_grace=120,
        max_concurrent_rpcs=1000,
        offload_workers=1,
        offload_queue=400,
        # Every accepted call may take the whole grace period, however slow the machine.
        offload_timeout=120,
        offload_queue_timeout=120,
        max_message_size=LARGE_MESSAGES,
        **threads,
    )
    heavy = documents_pb2.ValidateRequest(document_json=document_costing(2.5))
    slowest = documents_pb2.ValidateRequest(document_json=document_costing(5.0))  # > drain delay
    light = documents_pb2.ValidateRequest(document_json='{"name": "Ada"}')
    validate = f"{SERVICE}/Validate"
    finished_at: list[float] = []  # wall-clock time, comparable with the service's log

    def accepted() -> float:
        """RPCs the server has taken on (until then stop() would refuse them like new ones)."""
        active = service.metric("rpc_server_active_calls", rpc_method=validate)
        return active + service.metric(
            "rpc_server_call_duration_seconds_count",
            rpc_method=validate,
            rpc_response_status_code="OK",
        )

    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        in_flight = []
        # Three heavy validations keep the only worker busy for seconds; the light ones queue
        # behind them in the offload pool, so most are still in flight when the server stops.
        for index in range(300):
            future = stub.Validate.future(heavy if index < 3 else light, timeout=180)
            future.add_done_callback(lambda _: finished_at.append(time.time()))
            in_flight.append(future)
            if index == 2:
                wait_until(lambda: accepted() == 3, 60, "the heavy RPCs to arrive")
        wait_until(lambda: accepted() == len(in_flight), 180, "the server to accept every RPC")
        # However long that took, one more heavy validation, queued last, is still running
        # when the drain delay ends and the server stops.
        last = stub.Validate.future(slowest, timeout=180)
        last.add_done_callback(lambda _: finished_at.append(time.time()))
        in_flight.append(last)
        wait_until(lambda: accepted() == len(in_flight), 60, "the server to accept the last RPC")

        service.process.signal(signal.SIGTERM)
        service.wait_event("draining")
        # During the drain delay the server still takes new RPCs (on a new connection, too).
        with service.channel() as fresh:
            fresh_stub = documents_pb2_grpc.DocumentServiceStub(fresh)
            for _ in range(5):
                assert fresh_stub.Ping(documents_pb2.PingRequest(), timeout=30).request_id
        assert not service.events("grpc_server_stopping"), "the drain delay ended too soon"

        codes = [_code(future) for future in in_flight]
    assert codes == [grpc.StatusCode.OK] * len(in_flight)
    assert service.process.wait_exit(150) == 0
    stopping = datetime.fromisoformat(service.wait_event("grpc_server_stopping")["timestamp"])
    assert max(finished_at) > stopping.timestamp(), "nothing was in flight when the server stopped"
    service.wait_event("service_stopped")


def test_open_watch_streams_end_when_the_server_stops(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # Clients with client-side health checking keep a Watch stream open; stop(grace) would
    # wait for it until the grace is over (here: far longer than the test waits).
    service = start_grpc(start_service, drain_delay=1, shutdown_grace=600)
    with service.channel() as channel:
        request = health_pb2.HealthCheckRequest()
        watch = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        service.process.signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert list(watch) == []  # the stream ends when the server stops ...
        assert watch.code() is grpc.StatusCode.OK  # ... normally, not cut off
    assert service.process.wait_exit(60) == 0


def test_a_second_signal_exits_at_once(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_grpc(start_service, drain_delay=300)
    service.process.signal(signal.SIGTERM)
    service.wait_event("draining")
    service.process.signal(signal.SIGTERM)
    assert service.process.wait_exit(30) == 128 + signal.SIGTERM
    service.wait_event("shutdown_forced")
    assert not service.events("grpc_server_stopping")


def test_sigint_drains_like_sigterm(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_grpc(start_service, drain_delay=0)
    service.process.signal(signal.SIGINT)
    assert service.process.wait_exit(60) == 0
    service.wait_event("service_stopped")
    assert "Traceback" not in service.process.output()


def _code(future: grpc.Future[documents_pb2.ValidateResponse]) -> grpc.StatusCode:
    try:
        future.result()
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call):
            raise
        return error.code()
    return grpc.StatusCode.OK
