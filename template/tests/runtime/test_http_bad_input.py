"""Bad requests get a clear 4xx problem answer: never a 5xx, never a stalled event loop."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from http_support import HttpService, raw_request, response_header, running_http

MAX_BODY = 4096
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def service() -> Iterator[HttpService]:
    # A threshold well above scheduling noise on a busy test machine, far below a real stall.
    with running_http(max_body_size=MAX_BODY, stall_threshold=0.5) as running:
        yield running
        assert not running.events("event_loop_stalled"), "bad input stalled the event loop"
        assert not running.events("request_failed"), "bad input raised inside the service"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'{"name": ', "application/json", id="truncated"),
        pytest.param(b'{"name": "Ada",}', "application/json", id="trailing-comma"),
        pytest.param(b"{'name': 'Ada'}", "application/json", id="single-quotes"),
        pytest.param(b"", "application/json", id="empty"),
        pytest.param(b'{"name": "Ada"}', "text/plain", id="not-declared-json"),
    ],
)
def test_malformed_json_is_422(service: HttpService, body: bytes, content_type: str) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/documents:validate", content=body, headers={"content-type": content_type}
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert problem["title"] == "Unprocessable Entity"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert problem["errors"], "a 422 says what is wrong"
    assert all(error["location"][0] == "body" for error in problem["errors"])


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"true", b"null"])
def test_a_body_that_is_not_an_object_is_422(service: HttpService, body: bytes) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/documents:validate", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["location"] == ["body"]
    assert error["type"] in {"dict_type", "missing"}  # FastAPI reads a JSON null as no body
    assert "input" not in error, "the client's data is not echoed back"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 3000 + b"]" * 3000, id="nested-too-deep"),
        pytest.param(b'{"name": "\xff\xfe"}', id="not-utf-8"),
    ],
)
def test_an_unparsable_body_is_a_4xx_problem(service: HttpService, body: bytes) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/documents:validate", content=body, headers={"content-type": "application/json"}
        )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == PROBLEM


def test_a_declared_oversize_body_is_413_before_it_is_read(service: HttpService) -> None:
    body = json.dumps({"text": "x" * MAX_BODY}).encode()
    head = (
        "POST /v1/documents:validate HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    # Only the headers are sent: the answer must not wait for the body.
    status, response = raw_request(service.port, head)
    assert status == 413
    assert response_header(response, "content-type") == PROBLEM
    assert b"larger than the limit" in response


def test_a_streamed_oversize_body_is_413_while_it_streams(service: HttpService) -> None:
    head = (
        b"POST /v1/documents:validate HTTP/1.1\r\nhost: test\r\n"
        b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunk = b'{"text": "' + b"x" * MAX_BODY
    chunks = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    # The final chunk is never sent before the answer: a server reading the whole body first
    # would wait forever (and raw_request would time out).
    status, response = raw_request(service.port, head + chunks, finish=b"0\r\n\r\n")
    assert status == 413
    assert response_header(response, "content-type") == PROBLEM


def test_a_body_within_the_limit_is_accepted(service: HttpService) -> None:
    with service.client() as client:
        response = client.post("/v1/documents:validate", json={"text": "x" * (MAX_BODY // 2)})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(b"a" * 1000, id="too-long"),
        pytest.param(b"abc\x01def", id="control-character"),
        pytest.param(b"abc\tdef", id="tab"),
        pytest.param("r\u00e9quest-\u2603".encode(), id="unicode"),
        pytest.param(b"<script>alert(1)</script>", id="markup"),
        pytest.param(b'abc" injected="1', id="quote"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_hostile_request_id_is_replaced_not_echoed(service: HttpService, hostile: bytes) -> None:
    request = (
        b"GET /v1/ping HTTP/1.1\r\nhost: test\r\nconnection: close\r\n"
        b"x-request-id: " + hostile + b"\r\n\r\n"
    )
    status, response = raw_request(service.port, request)
    assert 0 < status < 500
    if status == 200:
        echoed = response_header(response, "x-request-id")
        assert echoed is not None
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed
    if hostile.strip():
        assert hostile not in response, "the hostile id came back"
        assert hostile.decode("latin-1") not in service.process.stdout.text(), "it was logged"


def test_the_service_is_still_ready_after_bad_input(service: HttpService) -> None:
    with service.client() as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/documents:validate", json={"a": "b"}).status_code == 200
