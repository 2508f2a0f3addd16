"""A heavy validation in flight does not hold up light requests: the event loop stays free."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from conftest import ServiceProcess, wait_until
from http_support import LARGE_BODY, document_costing, start_http


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_light_requests_answer_while_a_heavy_validation_runs(
    start_service: Callable[..., ServiceProcess], executor: str
) -> None:
    document = document_costing(1.0)
    service = start_http(start_service, offload_executor=executor, max_body_size=LARGE_BODY)

    def validate() -> httpx2.Response:
        with service.client() as client:
            return client.post("/v1/documents:validate", json=document)

    with ThreadPoolExecutor(1) as pool, service.client() as client:
        heavy = pool.submit(validate)
        wait_until(
            lambda: service.metric("offload_in_flight", executor=executor) == 1,
            what="the heavy validation to start",
        )
        ping = client.get("/v1/ping")
        livez = client.get("/livez")
        still_running = not heavy.done()
        report = heavy.result()

    assert ping.status_code == 200
    assert livez.status_code == 200
    assert still_running, "the heavy validation ended before the light requests: make it heavier"
    assert report.status_code == 200
    assert report.json() == {"valid": True, "problems": []}
