"""Shutdown under load: SIGTERM -> NOT_SERVING -> drain delay -> stop(grace) -> exit 0.

Every RPC the server received before it began to stop must complete normally; a second
signal must end the process at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import grpc
from conftest import ServiceProcess
from grpc_support import document_costing, documents_pb2, documents_pb2_grpc, start_grpc

LARGE_MESSAGES = 32 * 1024 * 1024


def test_sigterm_under_load_lets_every_rpc_in_flight_finish_and_exits_0(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(
        start_service,
        drain_delay=3,
        shutdown_grace=120,
        max_concurrent_rpcs=1000,
        offload_workers=2,
        offload_queue=400,
        max_message_size=LARGE_MESSAGES,
    )
    heavy = documents_pb2.ValidateRequest(document_json=document_costing(0.5))
    light = documents_pb2.ValidateRequest(document_json='{"name": "Ada"}')
    stopping = threading.Event()
    finished_after_stop: list[bool] = []

    def watch_for_stop() -> None:
        service.process.stdout.wait_for('"event": "grpc_server_stopping"', timeout=120)
        stopping.set()

    threading.Thread(target=watch_for_stop, daemon=True).start()
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        in_flight = []
        for index in range(300):
            request = heavy if index % 15 == 0 else light  # 20 heavy ones, queued with the rest
            future = stub.Validate.future(request, timeout=180)
            future.add_done_callback(lambda _: finished_after_stop.append(stopping.is_set()))
            in_flight.append(future)

        service.process.signal(signal.SIGTERM)
        service.wait_event("draining")
        # During the drain delay the server still takes new RPCs (on a new connection, too).
        with service.channel() as fresh:
            fresh_stub = documents_pb2_grpc.DocumentServiceStub(fresh)
            for _ in range(5):
                assert fresh_stub.Ping(documents_pb2.PingRequest(), timeout=30).request_id
        assert not stopping.is_set(), "the drain delay ended before the pings were answered"

        codes = [_code(future) for future in in_flight]
    assert codes == [grpc.StatusCode.OK] * len(in_flight)
    assert any(finished_after_stop), "nothing was in flight when the server began to stop"
    assert service.process.wait_exit(150) == 0
    assert service.events("grpc_server_stopped")
    assert not service.events("shutdown_incomplete")


def test_a_second_signal_exits_at_once(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_grpc(start_service, drain_delay=300)
    service.process.signal(signal.SIGTERM)
    service.wait_event("draining")
    service.process.signal(signal.SIGTERM)
    assert service.process.wait_exit(30) == 128 + signal.SIGTERM
    assert service.events("shutdown_forced")
    assert not service.events("grpc_server_stopping")


def test_sigint_drains_like_sigterm(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_grpc(start_service, drain_delay=0)
    service.process.signal(signal.SIGINT)
    assert service.process.wait_exit(60) == 0
    assert service.events("grpc_server_stopped")
    assert "Traceback" not in service.process.output()


def _code(future: grpc.Future[documents_pb2.ValidateResponse]) -> grpc.StatusCode:
    try:
        future.result()
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return error.code()
    return grpc.StatusCode.OK
