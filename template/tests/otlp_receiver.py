"""A real OTLP/HTTP receiver for the tracing tests, and the fixtures that export to it.

It decodes each ``ExportTraceServiceRequest`` with the protobuf classes of ``opentelemetry-proto``
and keeps every span with its resource's attributes. Registered as a plugin by ``conftest.py``.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver:
    """An OTLP/HTTP endpoint on a free port of loopback."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []  # (resource attributes, span)
        self.posts = 0
        self._received = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.receive(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, path: str, body: bytes) -> None:
        assert path == "/v1/traces", path
        request = ExportTraceServiceRequest.FromString(body)
        with self._received:
            self.posts += 1
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)
            self._received.notify_all()

    def find(self, condition: Callable[[Span], bool]) -> list[tuple[dict[str, Any], Span]]:
        with self._received:
            return [(resource, span) for resource, span in self.spans if condition(span)]

    def wait_for(
        self, what: str, condition: Callable[[Span], bool], timeout: float = 30.0
    ) -> tuple[dict[str, Any], Span]:
        """The first span that meets ``condition``, as it arrives; fails at the deadline."""
        deadline = time.monotonic() + timeout
        with self._received:
            while not (found := self.find(condition)):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out after {timeout} s waiting for {what}")
                self._received.wait(left)
        return found[0]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    """OTLP key-value attributes as a plain dict."""
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def exporting_to(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """Processes started from here on export their spans to ``receiver`` (batches of 50 ms)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "traced-service")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    return receiver
