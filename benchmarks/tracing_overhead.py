"""What tracing costs a light request: the FastAPI service with tracing off, and on.

The service runs in a subprocess three ways for each executor: with no ``OTEL_*`` variables
(tracing off: neither the SDK nor the instrumentations are installed, the service only reads the
``traceparent``); with an exporter configured but no span sampled (``always_off``: the cost of
the instrumentation itself); and exporting every span (``always_on``) over OTLP/HTTP to a
receiver in this process that answers at once. One client sends requests one after the
other, each with a ``traceparent``: ``GET /v1/ping`` (no offload) and ``POST
/v1/documents:validate`` with a tiny document (one offloaded call). For each it measures the
median latency and the CPU time the service and its worker processes used per request (the
span exporter's thread included). The three run in turn, ``--repeat`` times; each cell is the
median of the runs, with its ratio to tracing off for the same executor.

With ``--wrk SECONDS`` it then loads ``GET /v1/ping`` (with the ``traceparent``) with wrk in each
mode: requests per second and the service's CPU time per request, the service pinned to the
first CPU and wrk to the others.

Run it with a generated FastAPI project::

    copier copy --trust --defaults . /tmp/svc
    uv run python benchmarks/tracing_overhead.py /tmp/svc --wrk 5
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from load_phase import CpuMeter
from service import (
    Service,
    answer,
    free_port,
    http_answers,
    pin,
    project_python,
    settings_env,
    wrk,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REQUESTS = {
    "GET /v1/ping": ("GET", "/v1/ping", b""),
    "POST validate": ("POST", "/v1/documents:validate", b'{"email": "ada@"}'),
}


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
    parser.add_argument(
        "--wrk",
        type=float,
        metavar="SECONDS",
        help="then load GET /v1/ping with wrk (96 connections) for SECONDS in each mode, the "
        "service on the first CPU and wrk on the others",
    )
    args = parser.parse_args()
    if answer(args.project, "transport") != "fastapi":
        raise SystemExit("tracing_overhead.py measures a FastAPI project")
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}"}
    modes = {
        "off": {},
        # The instrumentation installed, its spans recorded by nobody: what every request pays
        # once an exporter is configured, sampled or not.
        "none sampled": {**exporting, "OTEL_TRACES_SAMPLER": "always_off"},
        "all sampled": {**exporting, "OTEL_TRACES_SAMPLER": "always_on"},
    }
    # (executor, mode, request) -> per run: (median latency µs, CPU µs per request)
    runs: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for executor in ("thread", "process"):
            for mode, otel in modes.items():
                for request, measured in _run(args, executor, otel).items():
                    runs.setdefault((executor, mode, request), []).append(measured)

    print(
        f"{args.requests} sequential requests per run, {args.repeat} runs of each mode in turn; "
        "medians. CPU: the service and its worker processes, per request; in brackets: "
        "against tracing off.\n"
    )
    print(
        "| request | executor | CPU µs: off | none sampled | all sampled "
        "| latency µs: off | none sampled | all sampled |\n|---|---|---|---|---|---|---|---|"
    )
    for executor in ("thread", "process"):
        for request in REQUESTS:
            off, none, every = (_medians(runs[executor, mode, request]) for mode in modes)
            cells = [
                f"{off[i]:.0f} | {none[i]:.0f} ({none[i] / off[i]:.2f}) "
                f"| {every[i]:.0f} ({every[i] / off[i]:.2f})"
                for i in (1, 0)
            ]
            print(f"| {request} | {executor} | {' | '.join(cells)} |")
    if args.wrk:
        _under_load(args, modes)
    sink.shutdown()
    return 0


def _under_load(args: argparse.Namespace, modes: dict[str, dict[str, str]]) -> None:
    """Each mode in turn, ``--repeat`` times: the service (one worker process) loaded by wrk."""
    os.sched_setaffinity(0, os.sched_getaffinity(0) - {0})  # wrk, started from here, too
    loaded: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):
        for mode, otel in modes.items():
            service, port = _service(args, otel, offload_workers=1)
            url = f"http://127.0.0.1:{port}/v1/ping"
            with service:
                pin(service.pid, {0})
                loaded[mode].append(
                    wrk(url, args.wrk, 96, service.pid, [f"traceparent: {TRACEPARENT}"])
                )
    print(
        f"\nGET /v1/ping under wrk, {args.wrk:g} s per run, {args.repeat} runs of each mode in "
        "turn; medians, in brackets: against tracing off.\n"
    )
    print("| tracing | requests/s | server CPU µs per request |\n|---|---|---|")
    off_rate, off_cpu = _medians(loaded["off"])
    for mode, runs in loaded.items():
        rate, cpu = _medians(runs)
        print(
            f"| {mode} | {rate:,.0f} ({rate / off_rate:.2f}) "
            f"| {cpu * 1e6:.0f} ({cpu / off_cpu:.2f}) |"
        )


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    latencies, cpu = zip(*runs, strict=True)
    return statistics.median(latencies), statistics.median(cpu)


def _run(
    args: argparse.Namespace, executor: str, otel: dict[str, str]
) -> dict[str, tuple[float, float]]:
    """One service: each request's median latency and CPU per request, µs."""
    service, port = _service(args, otel, offload_executor=executor, log_level="warning")
    measured = {}
    with service:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for name, request in REQUESTS.items():
            _send(50, connection, *request)  # warm-up
            cpu = CpuMeter(service.pid)
            latency = _send(args.requests, connection, *request)
            spent = cpu.spent()
            seconds = spent["server"] + spent["children"]
            measured[name] = (latency, seconds / args.requests * 1e6)
        connection.close()
    return measured


def _service(
    args: argparse.Namespace, otel: dict[str, str], **settings: object
) -> tuple[Service, int]:
    """The service with ``settings`` and the ``otel`` variables on a free port, to start."""
    port = free_port()
    env = {**settings_env(args.project, port=port, **settings), **otel}
    command = [project_python(args.project), "-m", answer(args.project, "package_name")]
    ready = f"http://127.0.0.1:{port}/readyz"
    return Service(command, lambda: http_answers(ready), env=env), port


def _send(
    count: int, connection: http.client.HTTPConnection, method: str, path: str, body: bytes
) -> float:
    """The median latency of ``count`` requests on one connection, µs."""
    headers = {"traceparent": TRACEPARENT, "content-type": "application/json"}
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        text = response.read()
        timings.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"{method} {path} answered {response.status}: {text[:200]!r}")
    return statistics.median(timings) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
