"""A client that gives up stops what it was waiting for.

``GET /v1/test/sleep`` offloads an hour's sleep. Clients that disconnect after a moment must
not leave it holding the pool's only worker: a process worker is killed and replaced, a
queued call is dropped, and the next caller is served. A thread cannot be stopped; it is
counted as abandoned and keeps its slot until it ends.
"""

from __future__ import annotations

import contextlib
import socket

from conftest import wait_until
from http_support import HttpService, running_http

SLEEP = b"GET /v1/test/sleep HTTP/1.1\r\nhost: test\r\n\r\n"


def give_up(service: HttpService, executor: str, calls: int) -> None:
    """Send ``calls`` sleep requests, wait until the pool has them all, then disconnect."""

    def taken() -> float:
        return service.metric("offload_in_flight", executor=executor) + service.metric(
            "offload_queued", executor=executor
        )

    with contextlib.ExitStack() as connections:
        for _ in range(calls):
            connection = socket.create_connection(("127.0.0.1", service.port))
            connections.enter_context(connection).sendall(SLEEP)
        wait_until(lambda: taken() == calls, 30, "the sleeps to reach the pool")


def test_a_disconnected_clients_process_call_is_stopped_and_its_queued_one_dropped() -> None:
    settings = {"offload_executor": "process", "offload_workers": 1, "offload_timeout": 3600}
    with running_http(test_routes=True, **settings) as service:
        give_up(service, "process", 2)  # the first runs (its worker is killed), one is queued
        wait_until(
            lambda: (
                service.metric("offload_killed_total", executor="process", reason="cancelled") == 1
            ),
            30,
            "the running call's worker to be killed",
        )
        assert service.metric("offload_cancelled_total", executor="process", stage="queued") == 1
        assert service.wait_event("request_abandoned")["path"] == "/v1/test/sleep"
        with service.client() as client:

            def served() -> bool:  # once the new worker is up
                response = client.post("/v1/documents:validate", json={"name": "Ada"})
                return response.status_code == 200

            wait_until(served, 90, "a light call to be served")
        access = [e for e in service.events("request") if e["path"] == "/v1/test/sleep"]
        assert [e["status"] for e in access] == [499, 499]


def test_a_disconnected_clients_thread_is_counted_as_abandoned() -> None:
    settings = {"offload_executor": "thread", "offload_workers": 1, "offload_queue": 0}
    with running_http(test_routes=True, offload_timeout=3600, **settings) as service:
        give_up(service, "thread", 1)
        wait_until(
            lambda: service.metric("offload_abandoned_threads", executor="thread") == 1,
            30,
            "the thread to be counted as abandoned",
        )
        # It still sleeps in the only worker thread: admission does not pretend otherwise.
        with service.client() as client:
            response = client.post("/v1/documents:validate", json={"name": "Ada"})
        assert response.status_code == 503
        assert response.headers["retry-after"]
