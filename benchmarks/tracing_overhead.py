"""What tracing costs a light request: the FastAPI service with tracing off, and on.

The service runs in a subprocess three ways: no ``OTEL_*`` variables (no SDK, the
instrumentations on the API's no-op spans), and exporting every span (``always_on`` sampler) over
OTLP/HTTP to a receiver in this process that answers at once, with the thread and the process
executor. One client sends requests one after the other, each with a ``traceparent``: ``GET
/v1/ping`` (no offload) and ``POST /v1/documents:validate`` with a tiny document (one offloaded
call). Each row is the median of ``--repeat`` runs of the median latency of a run; the ratio is
against tracing off with the same executor.

Run it with a generated FastAPI project::

    copier copy --trust --defaults . /tmp/svc
    uv run python benchmarks/tracing_overhead.py /tmp/svc
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from service import Service, answer, free_port, http_answers, project_python, settings_env

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that reads and drops what it is sent."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated FastAPI service")
    parser.add_argument("--requests", type=int, default=1000, help="requests per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median shown)")
    args = parser.parse_args()
    if answer(args.project, "transport") != "fastapi":
        raise SystemExit("tracing_overhead.py measures a FastAPI project")
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    exporting = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
        "OTEL_TRACES_SAMPLER": "always_on",
    }

    print(f"Median latency, µs ({args.requests} sequential requests per run, {args.repeat} runs)\n")
    print("| request | executor | tracing off | tracing on | on / off |\n|---|---|---|---|---|")
    for executor in ("thread", "process"):
        off = _measure(args, executor, {})
        on = _measure(args, executor, exporting)
        for request in ("GET /v1/ping", "POST validate"):
            ratio = on[request] / off[request]
            print(
                f"| {request} | {executor} | {off[request]:.0f} | {on[request]:.0f} | {ratio:.2f} |"
            )
    sink.shutdown()
    return 0


def _measure(args: argparse.Namespace, executor: str, otel: dict[str, str]) -> dict[str, float]:
    runs: dict[str, list[float]] = {"GET /v1/ping": [], "POST validate": []}
    for _ in range(args.repeat):
        port = free_port()
        env = settings_env(args.project, port=port, offload_executor=executor, log_level="warning")
        env.update(otel)
        package = answer(args.project, "package_name")
        base = f"http://127.0.0.1:{port}"
        command = [project_python(args.project), "-m", package]
        with Service(command, lambda base=base: http_answers(base + "/readyz"), env=env):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            ping = ("GET", "/v1/ping", b"")
            validate = ("POST", "/v1/documents:validate", b'{"email": "ada@"}')
            runs["GET /v1/ping"].append(_latency(args.requests, connection, *ping))
            runs["POST validate"].append(_latency(args.requests, connection, *validate))
            connection.close()
    return {name: statistics.median(values) for name, values in runs.items()}


def _latency(
    count: int, connection: http.client.HTTPConnection, method: str, path: str, body: bytes
) -> float:
    """The median latency of ``count`` requests on one connection, µs, after 50 to warm up."""
    headers = {"traceparent": TRACEPARENT, "content-type": "application/json"}
    timings = []
    for index in range(50 + count):
        started = time.perf_counter()
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        text = response.read()
        if index >= 50:
            timings.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"{method} {path} answered {response.status}: {text[:200]!r}")
    return statistics.median(timings) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
