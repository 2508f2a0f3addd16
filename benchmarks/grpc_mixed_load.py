"""Light-RPC throughput of a generated gRPC service, alone and next to heavy RPCs.

The question it answers: while a few CPU-heavy validations are in flight, how much of its
light-RPC throughput does the service keep, with the process executor and with threads, on the
thread-pool server (transport grpc) or on grpc.aio (transport grpc_aio)? For each executor it
starts the service, drives ``Ping`` from CONCURRENCY client coroutines for DURATION seconds,
then does it again while HEAVY clients keep one ``Validate`` each in flight (a document whose
validation costs HEAVY_COST seconds of CPU), and prints one table row per run. Every answer's
status is checked: a failed RPC is counted as an error, never as throughput.

Run it with the generated project's own interpreter (it imports the project's package, its
generated stubs and grpcio from the project's environment)::

    copier copy --trust --defaults --data transport=grpc_aio . /tmp/svc
    (cd /tmp/svc && uv sync)
    /tmp/svc/.venv/bin/python benchmarks/grpc_mixed_load.py /tmp/svc

Everything runs on loopback, so the client, the service and its workers share the machine's
CPUs: compare the rows with each other, not with numbers from another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from service import Service, answer, free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated gRPC service (uv sync done)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="Ping calls kept in flight")
    parser.add_argument("--heavy", type=int, default=4, help="heavy RPCs kept in flight")
    parser.add_argument("--heavy-cost", type=float, default=0.5, help="CPU seconds per heavy")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="offload workers")
    parser.add_argument("--executors", default="process,thread")
    args = parser.parse_args()

    package = answer(args.project, "package_name")
    transport = answer(args.project, "transport")
    sys.path.insert(0, str(args.project / "src"))
    stubs = importlib.import_module(f"{package}.v1.documents_pb2_grpc")
    messages = importlib.import_module(f"{package}.v1.documents_pb2")
    documents = importlib.import_module(f"{package}.documents")
    heavy_request = messages.ValidateRequest(
        document_json=_document_costing(documents.validate_document, args.heavy_cost)
    )

    print(
        "| transport | executor | heavy in flight | ping RPC/s | ping p50 ms | ping p99 ms |"
        " ping errors | heavy done/s |\n|---|---|---|---|---|---|---|---|"
    )
    for executor in args.executors.split(","):
        service = Service(
            args.project,
            _serving,
            metrics_port=free_port(),
            offload_executor=executor,
            offload_workers=args.workers,
            max_message_size=256 * 1024 * 1024,
            log_level="warning",
        )
        with service as port:
            target = f"127.0.0.1:{port}"
            for heavy in (0, args.heavy):
                row = _measure(target, stubs, messages, heavy_request, heavy, args)
                print(f"| {transport} | {executor} | {heavy} | {row} |", flush=True)
    return 0


def _document_costing(validate: Any, seconds: float) -> str:
    """A clean JSON document whose validation costs about ``seconds`` of CPU here."""
    text = ("1 2 3 4 5 6 7 8 9 0 1 2 x " * 400).strip()
    started = time.perf_counter()
    validate({f"field{index}": text for index in range(20)})
    per_field = (time.perf_counter() - started) / 20
    count = max(1, round(seconds / per_field))
    return json.dumps({f"field{index}": text for index in range(count)})


def _serving(port: int) -> bool:
    health = importlib.import_module("grpc_health.v1.health_pb2")
    health_grpc = importlib.import_module("grpc_health.v1.health_pb2_grpc")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_grpc.HealthStub(channel).Check(health.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(answer.status == health.HealthCheckResponse.SERVING)


def _measure(
    target: str, stubs: Any, messages: Any, heavy_request: Any, heavy: int, args: Any
) -> str:
    stop = threading.Event()
    heavy_done = [0]
    heavy_failed: list[str] = []
    lock = threading.Lock()

    def keep_one_in_flight() -> None:
        # One channel each: with a shared one, its connection would carry every heavy request.
        options = [("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(target, options=options) as channel:
            validate = stubs.DocumentServiceStub(channel).Validate
            while not stop.is_set():
                try:
                    validate(heavy_request, timeout=300)
                except grpc.RpcError as error:
                    heavy_failed.append(str(error.code()))
                    return
                with lock:
                    heavy_done[0] += 1

    threads = [threading.Thread(target=keep_one_in_flight, daemon=True) for _ in range(heavy)]
    for thread in threads:
        thread.start()
    if heavy:
        time.sleep(2 * args.heavy_cost)  # let every heavy request reach the service
    with lock:
        heavy_done[0] = 0
    count, errors, latencies = asyncio.run(_ping_load(target, stubs, messages, args))
    with lock:
        heavy_rate = heavy_done[0] / args.duration
    stop.set()
    for thread in threads:
        thread.join(300)
    if heavy_failed:
        raise SystemExit(f"a heavy request failed: {heavy_failed[0]}")
    latencies.sort()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return f"{count / args.duration:,.0f} | {p50:.1f} | {p99:.1f} | {errors} | {heavy_rate:.2f}"


async def _ping_load(
    target: str, stubs: Any, messages: Any, args: Any
) -> tuple[int, int, list[float]]:
    """Ping from ``args.concurrency`` coroutines until the duration is over."""
    latencies: list[float] = []
    errors = 0
    request = messages.PingRequest()
    async with grpc.aio.insecure_channel(target) as channel:
        ping = stubs.DocumentServiceStub(channel).Ping
        await ping(request, timeout=10)  # connected before the clock starts
        deadline = time.perf_counter() + args.duration

        async def client() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                try:
                    await ping(request, timeout=30)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(args.concurrency)))
    return len(latencies), errors, latencies


if __name__ == "__main__":
    sys.exit(main())
