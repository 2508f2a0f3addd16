"""Light-request throughput of a generated FastAPI service, alone and next to heavy requests.

The question it answers: while a few CPU-heavy validations are in flight, how much of its
light-request throughput does the service keep, with the process executor and with threads?
For each executor it starts the service, measures ``GET /v1/ping`` with wrk, then measures it
again while HEAVY clients keep one ``POST /v1/documents:validate`` each in flight (a document
whose validation costs HEAVY_COST seconds of CPU), and prints one table row per run.

Run it with the generated project's own interpreter (it imports the project's package and
httpx from the project's environment); wrk must be on PATH (``apt-get install wrk``)::

    copier copy --trust --defaults --data transport=fastapi . /tmp/svc
    (cd /tmp/svc && uv sync)
    /tmp/svc/.venv/bin/python benchmarks/http_mixed_load.py /tmp/svc

Everything runs on loopback, so client, service and its workers share the machine's CPUs:
compare the rows with each other, not with numbers from another machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from service import Service, answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated FastAPI service (uv sync done)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--heavy", type=int, default=4, help="heavy requests kept in flight")
    parser.add_argument("--heavy-cost", type=float, default=0.5, help="CPU seconds per heavy")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="offload workers")
    parser.add_argument("--executors", default="process,thread")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2

    package = answer(args.project, "package_name")
    documents = importlib.import_module(f"{package}.documents")
    heavy_document = _document_costing(documents.validate_document, args.heavy_cost)

    print(
        "| executor | heavy in flight | ping req/s | ping p50 ms | ping p99 ms | heavy done/s |"
        "\n|---|---|---|---|---|---|"
    )
    for executor in args.executors.split(","):
        service = Service(
            args.project,
            _http_ready,
            offload_executor=executor,
            offload_workers=args.workers,
            max_body_size=512 * 1024 * 1024,
            log_level="warning",
        )
        with service as port:
            base_url = f"http://127.0.0.1:{port}"
            for heavy in (0, args.heavy):
                row = _measure(base_url, heavy, heavy_document, args)
                print(f"| {executor} | {heavy} | {row} |", flush=True)
    return 0


def _document_costing(validate: Any, seconds: float) -> dict[str, Any]:
    sentence = "Invoice 2024-117 for ACME Corp, delivered to 12 Main Street, paid in full."
    item = {"title": " ".join([sentence] * 8), "notes": [" ".join([sentence] * 4)] * 2}
    started = time.perf_counter()
    validate({"items": [item] * 200})
    per_item = (time.perf_counter() - started) / 200
    return {"items": [item] * max(1, round(seconds / per_item))}


def _http_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _measure(base_url: str, heavy: int, document: dict[str, Any], args: Any) -> str:
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()

    def keep_one_in_flight() -> None:
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while not stop.is_set():
                response = client.post("/v1/documents:validate", json=document)
                response.raise_for_status()
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=keep_one_in_flight, daemon=True) for _ in range(heavy)]
    for thread in threads:
        thread.start()
    if heavy:
        time.sleep(2 * args.heavy_cost)  # let every heavy request reach the service
    with lock:
        done[0] = 0
    wrk = subprocess.run(
        [
            "wrk",
            "--latency",
            f"-t{min(2, args.connections)}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            base_url + "/v1/ping",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    with lock:
        heavy_rate = done[0] / args.duration
    stop.set()
    for thread in threads:
        thread.join(60)
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", wrk.stdout)
    rate = float(rate_match.group(1)) if rate_match else float("nan")
    p50 = _latency_ms(wrk.stdout, "50%")
    p99 = _latency_ms(wrk.stdout, "99%")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk.stdout)
    note = f" ({errors.group(1)} errors)" if errors else ""
    return f"{rate:,.0f}{note} | {p50:.1f} | {p99:.1f} | {heavy_rate:.2f}"


def _latency_ms(report: str, percentile: str) -> float:
    match = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", report, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


if __name__ == "__main__":
    sys.exit(main())
