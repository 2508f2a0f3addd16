"""Overload, bugs and crashes: clear answers to the client, and the service stays healthy."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx2

from conftest import ServiceProcess, wait_until
from http_support import (
    INTERNALS,
    LARGE_BODY,
    HttpService,
    document_costing,
    running_http,
    start_http,
)

PROBLEM = "application/problem+json"


def test_a_full_offload_pool_answers_503_with_retry_after(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(
        start_service, offload_workers=1, offload_queue=0, max_body_size=LARGE_BODY
    )
    executor = service.wait_event("offload_started")["executor"]
    with ThreadPoolExecutor(1) as pool, service.client() as client:
        heavy = _post_in_background(pool, service, document_costing(1.0))
        wait_until(
            lambda: service.metric("offload_in_flight", executor=executor) == 1,
            what="the heavy validation to occupy the only worker",
        )
        rejected = client.post("/v1/documents:validate", json={"a": "b"})
        assert not heavy.done(), "the heavy validation ended early: make it heavier"
        assert heavy.result().status_code == 200

    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == "1"
    assert rejected.headers["content-type"] == PROBLEM
    assert rejected.json()["detail"].startswith("The service is at capacity")
    assert service.metric("offload_rejected_total", executor=executor) == 1


def test_an_unexpected_error_is_500_without_internals() -> None:
    with running_http(test_routes=True) as service, service.client() as client:
        response = client.get("/v1/test/fail", headers={"x-request-id": "bug-1"})

        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["x-request-id"] == "bug-1"
        assert response.json() == {
            "type": "about:blank",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "An unexpected error occurred.",
            "request_id": "bug-1",
        }
        # The server's log has the whole story, under the same request id.
        failed = service.wait_event("request_failed")
        assert failed["request_id"] == "bug-1"
        assert INTERNALS in json.dumps(failed)
        # Counted as a server error: error_type holds the status code.
        failed_requests = {"http_route": "/v1/test/fail", "error_type": "500"}
        assert service.metric("http_server_request_duration_seconds_count", **failed_requests) == 1
        _assert_healthy(client)


def test_a_crashed_worker_process_is_500_and_the_next_call_succeeds(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(
        start_service, offload_executor="process", offload_workers=1, max_body_size=LARGE_BODY
    )
    (worker_pid,) = service.wait_event("offload_started")["worker_pids"]
    with ThreadPoolExecutor(1) as pool, service.client() as client:
        heavy = _post_in_background(pool, service, document_costing(2.0))
        wait_until(
            lambda: service.metric("offload_in_flight", executor="process") == 1,
            what="the validation to reach the worker",
        )
        os.kill(worker_pid, signal.SIGKILL)
        response = heavy.result()

        assert response.status_code == 500
        assert response.json()["detail"] == "An unexpected error occurred."
        assert str(worker_pid) not in response.text
        _assert_healthy(client)


def _post_in_background(
    pool: ThreadPoolExecutor, service: HttpService, document: dict[str, Any]
) -> Future[httpx2.Response]:
    def post() -> httpx2.Response:
        with service.client() as client:
            return client.post("/v1/documents:validate", json=document)

    return pool.submit(post)


def _assert_healthy(client: httpx2.Client) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/ping").status_code == 200
    assert client.post("/v1/documents:validate", json={"name": "Ada"}).json()["valid"] is True
