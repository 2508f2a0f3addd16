"""Connections as the settings say: the server asks a client to reconnect once its connection
is ``MAX_CONNECTION_AGE`` old; a client that keeps an idle connection alive with pings (Envoy
does) keeps it, unless it pings more often than ``KEEPALIVE_MIN_CLIENT_INTERVAL`` allows; a
client that stops answering the server's pings (``KEEPALIVE_TIME``, ``KEEPALIVE_TIMEOUT``)
loses its connection and its calls.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import grpc
import pytest

from conftest import ServiceProcess, wait_until
from grpc_support import (
    SLEEP_METHOD,
    documents_pb2,
    documents_pb2_grpc,
    start_failing_grpc,
    start_grpc,
)

READY = grpc.ChannelConnectivity.READY


class States:
    """The connectivity states a channel goes through, as grpcio reports them."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._seen: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
        channel.subscribe(self._seen.put)

    def wait_for(self, wanted: Callable[[grpc.ChannelConnectivity], bool], what: str) -> None:
        if not self.reached(wanted, 30):
            pytest.fail(f"the channel did not get to {what} within 30 s")

    def reached(self, wanted: Callable[[grpc.ChannelConnectivity], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                if wanted(self._seen.get(timeout=left)):
                    return True
            except queue.Empty:
                break
        return False


def ping(channel: grpc.Channel) -> None:
    documents_pb2_grpc.DocumentServiceStub(channel).Ping(documents_pb2.PingRequest(), timeout=10)


def connected(channel: grpc.Channel) -> States:
    """``channel``'s states, from the moment a call has connected it."""
    states = States(channel)
    ping(channel)
    states.wait_for(lambda state: state is READY, "a connection")
    return states


def test_an_old_connection_is_asked_to_reconnect(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service, max_connection_age=1, max_connection_age_grace=1)
    with service.channel() as channel:
        states = connected(channel)
        # No call is running: after about a second the server's GOAWAY ends the connection.
        states.wait_for(lambda state: state is not READY, "the end of its connection")
        ping(channel)  # the next call connects again


def keepalive(every_ms: int) -> list[tuple[str, int]]:
    """A client's options to ping its connection every ``every_ms``, calls or not."""
    return [
        ("grpc.keepalive_time_ms", every_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def test_an_idle_connection_kept_alive_by_the_client_stays(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """With gRPC's own defaults the third of these pings would end the connection."""
    service = start_grpc(start_service, keepalive_min_client_interval=1)
    with grpc.insecure_channel(service.target, options=keepalive(1500)) as channel:
        states = connected(channel)
        assert not states.reached(lambda state: state is not READY, within=6.0), "it ended"


def test_a_client_that_pings_too_often_loses_its_connection(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service, keepalive_min_client_interval=10)
    with grpc.insecure_channel(service.target, options=keepalive(200)) as channel:
        states = connected(channel)
        # Two pings too early are forgiven, the third ends the connection (GOAWAY too_many_pings).
        states.wait_for(lambda state: state is not READY, "the end of its connection")
    assert service.process.process.poll() is None, "the server must carry on"


# A client that makes one call (target and method in its arguments) and waits for its answer.
CALLER = """
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
channel.unary_unary(sys.argv[2]).future(b"", timeout=600).exception()
"""


def test_the_call_of_a_client_that_stopped_answering_is_cancelled() -> None:
    """A frozen client (SIGSTOP here; a crashed host or a dropped NAT mapping in life) does not
    answer the server's pings: its connection is closed and its call cancelled, which stops the
    worker the call held, instead of waiting for a deadline an hour away."""
    service = start_failing_grpc(
        keepalive_time=1,
        keepalive_timeout=1,
        offload_executor="process",
        offload_workers=1,
        offload_timeout=3600,
    )

    def running() -> bool:
        return service.metric("offload_in_flight", executor="process") == 1

    def stopped() -> bool:
        return service.metric("offload_killed_total", executor="process", reason="cancelled") == 1

    client = subprocess.Popen([sys.executable, "-c", CALLER, service.target, SLEEP_METHOD])
    try:
        wait_until(running, 30, "the client's call to reach the pool")
        client.send_signal(signal.SIGSTOP)
        wait_until(stopped, 30, "the frozen client's call to be cancelled")
    finally:
        client.kill()
        client.wait()
        service.process.stop()
