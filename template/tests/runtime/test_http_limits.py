"""The request head is bounded: an oversized header or too many of them get 431, a client too
slow to send its headers gets 408, and neither costs the service memory or its other clients.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

from conftest import ServiceProcess, wait_until
from http_support import HttpService, start_http

MIB = 1024 * 1024
SLOW_CLIENTS = 300


def rss_bytes(service: HttpService) -> int:
    status = Path(f"/proc/{service.process.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def send_head(port: int, head_start: bytes, filler: int) -> bytes:
    """Send ``head_start`` then ``filler`` bytes of one header's value; the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head_start)
        chunk = b"a" * MIB
        with contextlib.suppress(OSError):  # the service closes the connection early
            for _ in range(filler // MIB):
                sock.sendall(chunk)
        response = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                response += chunk
    return response


def test_a_64_mib_header_is_refused_with_431_and_costs_no_memory(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(start_service, offload_executor="thread")
    with service.client() as client:
        client.get("/v1/ping")  # everything a request needs is loaded and allocated
        before = rss_bytes(service)
        response = send_head(service.port, b"GET /v1/ping HTTP/1.1\r\nhost: x\r\nx-big: ", 64 * MIB)
        assert response.startswith(b"HTTP/1.1 431 "), response[:200]
        assert b"application/problem+json" in response
        assert rss_bytes(service) - before < 8 * MIB
        assert client.get("/v1/ping").status_code == 200
    assert service.wait_event("request_head_refused")["status"] == 431


def test_too_many_header_fields_are_refused_with_431(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(start_service, offload_executor="thread", max_headers=20)
    with service.client() as client:
        fields = {f"x-field-{index}": "1" for index in range(21)}
        assert client.get("/v1/ping", headers=fields).status_code == 431
        assert client.get("/v1/ping", headers=dict(list(fields.items())[:10])).status_code == 200


def test_a_head_over_the_size_limit_is_refused_even_when_read_at_once(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """A head this small arrives in one read: it is measured as it is parsed."""
    service = start_http(start_service, offload_executor="thread", max_header_size=2048)
    with service.client() as client:
        assert client.get("/v1/ping", headers={"x-big": "a" * 1500}).status_code == 200
        assert client.get("/v1/ping", headers={"x-big": "a" * 2500}).status_code == 431
        assert client.get("/v1/ping?" + "q" * 2500).status_code == 431  # the request line too
        assert client.get("/v1/ping").status_code == 200


def test_slow_senders_are_disconnected_and_others_still_served(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(start_service, offload_executor="thread", header_timeout=2)
    slow = []
    for index in range(SLOW_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=30)
        if index % 2:  # half send a part of their headers, the others nothing at all
            sock.sendall(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\nx-slow: ")
        slow.append(sock)
    try:
        with service.client() as client:
            assert client.get("/v1/ping").status_code == 200

        def closed(sock: socket.socket) -> bool:
            sock.settimeout(30)
            response = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    response += chunk
            return response.startswith(b"HTTP/1.1 408 ")

        statuses = [closed(sock) for sock in slow]
        assert all(statuses), f"{statuses.count(False)} slow connections were not ended with 408"
        with service.client() as client:
            assert client.get("/v1/ping").status_code == 200
    finally:
        for sock in slow:
            sock.close()
    wait_until(lambda: len(service.events("request_head_refused")) >= SLOW_CLIENTS, 30)


def test_each_head_on_a_keep_alive_connection_gets_the_whole_header_timeout(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # The time limit of a head counts from its own first byte, not from the connection's
    # previous request: a connection sending its second request late, then slowly, is served.
    service = start_http(start_service, offload_executor="thread", header_timeout=4)
    request = b"GET /v1/ping HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(request)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(3)  # the slow client under test: most of the limit passes between requests
        sock.sendall(request[:20])
        time.sleep(2.5)  # past 4 s from the first request, 2.5 s into this head
        sock.sendall(request[20:])
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(request[:20])  # a third head that never ends
        assert read_response(sock).startswith(b"HTTP/1.1 408 ")


def read_response(sock: socket.socket) -> bytes:
    """One response's head and its (small) body, or what came before the connection closed."""
    response = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in response or not response.endswith((b"}", b"]")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    return response
