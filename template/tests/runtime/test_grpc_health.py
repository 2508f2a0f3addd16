"""Standard health checking follows the lifecycle: NOT_SERVING -> SERVING -> NOT_SERVING.

Warm-up is held back for the test by a ``sitecustomize`` module that makes the offload pool's
worker processes wait for a file: whatever the test sees before it creates the file, it saw
before warm-up was done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import PACKAGE, ServiceProcess, service_env, wait_until
from grpc_support import (
    SERVICE,
    THREADED,
    GrpcService,
    costly_validations,
    documents_pb2,
    documents_pb2_grpc,
    launch_grpc,
    start_grpc,
    start_grpc_with_one_worker,
)

# Python runs this at the start of every interpreter on the path. Only multiprocessing's
# helper processes (started as ``python -c ...``) wait; the service itself runs with ``-m``.
GATE = """\
import os, sys, time

gate = os.environ.get("TEST_WARMUP_GATE")
if gate and sys.argv[:1] == ["-c"]:
    while not os.path.exists(gate):
        time.sleep(0.02)
"""


def healthcheck(service: GrpcService, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <package>.healthcheck`` with the service's environment, as in its container."""
    return subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.healthcheck", *args],
        env=service_env(port=service.port),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def held_warm_up(tmp_path: Path) -> Iterator[tuple[GrpcService, Path]]:
    """A service whose warm-up waits until the test creates the returned file."""
    (tmp_path / "sitecustomize.py").write_text(GATE)
    gate = tmp_path / "warm-up-may-finish"
    started: list[ServiceProcess] = []

    def start(**settings: object) -> ServiceProcess:
        env = service_env(**settings)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
        env["TEST_WARMUP_GATE"] = str(gate)
        started.append(ServiceProcess(env))
        return started[-1]

    # Process workers, whatever the default: their start is the warm-up being held back.
    yield launch_grpc(start, offload_executor="process"), gate
    gate.touch()
    for process in started:
        process.stop()


def test_not_serving_until_warm_up_is_done_then_serving(
    held_warm_up: tuple[GrpcService, Path],
) -> None:
    service, gate = held_warm_up
    service.wait_event("grpc_server_started")
    assert service.health() == "NOT_SERVING"
    assert service.health(SERVICE) == "NOT_SERVING"
    assert service.health("no.such.Service") == "NOT_FOUND"
    assert service.health("liveness") == "SERVING"  # alive, though not ready
    probe = healthcheck(service)
    assert probe.returncode == 1
    assert probe.stdout.strip().endswith(": NOT_SERVING")
    assert not service.events("service_ready"), "warm-up finished while it was held back"

    gate.touch()
    wait_until(lambda: service.health() == "SERVING", 60, "SERVING after warm-up")
    assert service.health(SERVICE) == "SERVING"
    service.wait_event("service_ready")
    probe = healthcheck(service)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().endswith(": SERVING")


def test_watch_sees_not_serving_when_sigterm_arrives_while_rpcs_go_on(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service, drain_delay=30)
    statuses: list[str] = []
    with service.channel() as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )

        def follow() -> None:
            try:
                for response in watch:
                    statuses.append(
                        health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                    )
            except grpc.RpcError:
                pass  # cancelled by the test below

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        wait_until(lambda: statuses == ["SERVING"], what="the watch's first answer")

        service.process.signal(signal.SIGTERM)
        wait_until(lambda: statuses == ["SERVING", "NOT_SERVING"], what="NOT_SERVING on SIGTERM")
        # Not ready, but still serving until the drain delay is over.
        assert service.health(SERVICE) == "NOT_SERVING"
        assert service.health("liveness") == "NOT_SERVING"
        assert healthcheck(service).returncode == 1
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        assert stub.Ping(documents_pb2.PingRequest(), timeout=10).request_id
        assert not service.events("grpc_server_stopping"), "the drain delay ended too soon"
        watch.cancel()
        follower.join(10)


def test_health_is_answered_while_every_handler_is_busy(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # Two handler threads (thread-pool server), both held by validations that take seconds.
    threads: dict[str, object] = {"handler_threads": 2} if THREADED else {}
    service = start_grpc_with_one_worker(start_service, **threads)
    with service.channel() as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        validations = costly_validations(stub, 3.0, timeout=120)
        wait_until(lambda: service.offload_calls() == 2, what="both validations to hold a handler")
        assert service.health() == "SERVING"
        assert not any(validation.done() for validation in validations)
        assert all(validation.result().valid for validation in validations)


def test_healthcheck_fails_when_nothing_answers(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_grpc(start_service, drain_delay=0)
    assert healthcheck(service).returncode == 0
    service.process.signal(signal.SIGTERM)
    assert service.process.wait_exit(60) == 0
    probe = healthcheck(service, "--timeout", "1")
    assert probe.returncode == 1
    assert "UNAVAILABLE" in probe.stderr
