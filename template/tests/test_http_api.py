"""The HTTP service's endpoints, headers, logs and schema, against a real uvicorn process."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conftest import PACKAGE, ServiceProcess, free_port, service_env, wait_until
from http_support import HttpService, running_http

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def service() -> Iterator[HttpService]:
    with running_http() as running:
        yield running


def test_ping_answers_without_work(service: HttpService) -> None:
    with service.client() as client:
        response = client.get("/v1/ping")
    assert response.status_code == 200
    assert response.json() == {"message": "pong"}


def test_validate_lists_the_problems_of_a_document(service: HttpService) -> None:
    document = {
        "customer": {"name": " Ada", "email": "ada@", "phone": "+4930123456"},
        "notes": ["card 4111 1111 1111 1111", "key AKIAABCDEFGHIJKLMNOP"],
    }
    with service.client() as client:
        response = client.post("/v1/documents:validate", json=document)
    assert response.status_code == 200
    report = response.json()
    assert report["valid"] is False
    found = {(problem["path"], problem["rule"]) for problem in report["problems"]}
    assert found == {
        ("/customer/name", "surrounding-whitespace"),
        ("/customer/email", "email-format"),
        ("/notes/0", "card-number"),
        ("/notes/1", "credential"),
    }
    assert "4111" not in response.text, "a problem must not repeat the offending value"


def test_a_clean_document_is_valid(service: HttpService) -> None:
    document = {"name": "Ada", "email": "ada@example.com", "site": "https://example.com/"}
    with service.client() as client:
        response = client.post("/v1/documents:validate", json=document)
    assert response.json() == {"valid": True, "problems": []}


def test_the_request_id_is_echoed_and_in_the_access_log(service: HttpService) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/documents:validate", json={"a": "b"}, headers={"x-request-id": "order-42.7"}
        )
    assert response.headers["x-request-id"] == "order-42.7"
    wait_until(lambda: _access(service, "order-42.7") is not None, what="the access log line")
    line = _access(service, "order-42.7")
    assert line is not None
    assert line["method"] == "POST"
    assert line["path"] == "/v1/documents:validate"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0


def test_a_missing_request_id_is_generated(service: HttpService) -> None:
    with service.client() as client:
        first = client.get("/v1/ping").headers["x-request-id"]
        second = client.get("/v1/ping").headers["x-request-id"]
    assert HEX_ID.fullmatch(first)
    assert first != second


def test_health_endpoints(service: HttpService) -> None:
    with service.client() as client:
        assert client.get("/livez").json() == {"status": "alive"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "serving"}


def test_metrics_count_requests_by_route_and_status(service: HttpService) -> None:
    with service.client() as client:
        client.get("/v1/ping")
        client.get("/no/such/path")
        text = client.get("/metrics").text
    ping_count = r'request_duration_seconds_count\{method="GET /v1/ping",status="200"\} [1-9]'
    assert re.search(ping_count, text)
    assert 'request_duration_seconds_count{method="GET unmatched",status="404"}' in text
    assert "eventloop_lag_seconds_bucket" in text
    assert "service_ready 1.0" in text


def test_it_runs_on_uvloop_and_httptools(service: HttpService) -> None:
    listening = service.wait_event("http_listening")
    assert listening["loop"].startswith("uvloop")
    assert listening["protocol"] == "HttpToolsProtocol"
    assert listening["keep_alive_timeout"] == 75


def test_openapi_documents_the_problem_responses(service: HttpService) -> None:
    with service.client() as client:
        schema = client.get("/openapi.json").json()
    problem = {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    validate = schema["paths"]["/v1/documents:validate"]["post"]["responses"]
    for status in ("400", "413", "422", "500", "503"):
        assert validate[status]["content"] == {"application/problem+json": problem}, status
    assert "application/json" in validate["200"]["content"]
    readyz = schema["paths"]["/readyz"]["get"]["responses"]
    assert readyz["503"]["content"] == {"application/problem+json": problem}
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_the_healthcheck_command_follows_readiness(service: HttpService) -> None:
    env = service_env(port=service.port)
    ready = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.healthcheck"], env=env, capture_output=True, check=False
    )
    assert ready.returncode == 0, ready.stderr
    env = service_env(port=free_port())  # nothing listens there
    down = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.healthcheck"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 1
    assert "not ready" in down.stderr


def test_readiness_waits_for_the_offload_workers(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """The port opens at once; /readyz says 503 while worker processes start, /livez 200."""
    port = free_port()
    start_service(host="127.0.0.1", port=port, offload_executor="process")
    seen: list[tuple[int, int]] = []

    def ready() -> bool:
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
                readiness = client.get("/readyz").status_code
                liveness = client.get("/livez").status_code
        except httpx.TransportError:
            return False
        seen.append((readiness, liveness))
        return readiness == 200

    wait_until(ready, 30.0, "readiness")
    assert seen[0] == (503, 200), f"first answers (readyz, livez): {seen[:3]}"


def _access(service: HttpService, request_id: str) -> dict[str, Any] | None:
    for event in service.events("request"):
        if event.get("request_id") == request_id:
            return event
    return None
