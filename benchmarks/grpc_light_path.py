"""Where a light RPC's time goes: the generated gRPC server against the bare one, side by side.

Starts the generated service (``python -m <package>``, default settings) and the bare reference
of the same flavour (``bare/grpc_fix.py``: grpcio's thread pool of 32, like the generated
server's default, or grpc.aio) as subprocesses on free ports, then, REPEAT times, interleaved,
calls ``Ping`` on each: CALLS times one after the other (microseconds per call), and CALLS times
with CONCURRENCY calls in flight on one grpc.aio channel (calls per second). It prints the medians,
the ratio bare / generated, and cProfile's view of a third, profiled generated server during the
same calls: the functions with the most time of their own, and the interceptor's functions by
cumulative time.

Run it with a generated gRPC project's interpreter (``transport`` grpc or grpc_aio)::

    build/seed-load-test/grpc/.venv/bin/python benchmarks/grpc_light_path.py \
        build/seed-load-test/grpc

The client runs in this process, on the same CPUs as the server: nothing is subtracted, the two
servers are compared under the same client. With ``--pin`` both servers run on the first CPU
and the client on the others: a server then competes with its own threads only, and the
rounds' ratios spread far less on a shared machine (a server confined to one CPU, as in a
container limited to one). The servers' logs go to /dev/null, so the access
log is formatted and written, but not shown. Python 3.12's profiler sees every thread, so the
sync server's handler threads and its polling thread are in the profile too. With ``--perf``
Linux perf samples both servers while they are measured, without slowing them as cProfile
does, and a table says where each one's CPU went, by Python function (``perf_samples.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import perf_samples
from service import (
    Service,
    answer,
    cpu_seconds,
    free_port,
    http_answers,
    pin,
    project_python,
    settings_env,
)

HERE = Path(__file__).resolve().parent


def main() -> int:
    if sys.argv[1:2] == ["--profiled-server"]:
        return _profiled_server(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated gRPC project (uv sync done)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="both servers on the first CPU, the client on the others: steadier ratios",
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="also sample both servers with Linux perf while they are measured, and print "
        "where their CPU went by Python function (perf_samples.py)",
    )
    args = parser.parse_args()
    if args.perf and (reason := perf_samples.unavailable()):
        parser.error(f"--perf: {reason}")
    project = args.project.resolve()
    transport = answer(project, "transport")
    if transport not in ("grpc", "grpc_aio"):
        parser.error(f"{project} serves {transport}: give a grpc or grpc_aio project")
    flavour = "sync" if transport == "grpc" else "aio"
    package = answer(project, "package_name")
    sys.path.insert(0, str(project / "src"))
    client = Client(package)

    timings: dict[str, dict[str, list[float]]] = {
        name: {"sequential": [], "concurrent": [], "cpu": []} for name in ("bare", "generated")
    }
    env = perf_samples.SERVER_ENV if args.perf else {}
    with (
        _bare(project, package, flavour, env) as bare,
        _generated(project, package, env=env) as generated,
    ):
        servers = {"bare": bare, "generated": generated}
        if args.pin:
            for server in servers.values():
                assert server.process is not None
                pin(server.process.pid, {0})
            os.sched_setaffinity(0, os.sched_getaffinity(0) - {0})
        for server in servers.values():
            client.sequential(server.port, 200)  # type: ignore[attr-defined]  # warm-up
        profile = perf_samples.SystemProfile() if args.perf else None
        with profile.recording() if profile is not None else nullcontext():
            _measure(client, servers, timings, args)
        if profile is not None:
            pids = [{server.process.pid} for server in (generated, bare) if server.process]
            calls = 2 * args.calls * args.repeat
            print(f"--- perf: {calls} Ping calls to each server ---")
            counts = profile.by_function(*pids)
            perf_samples.print_comparison(counts, ("generated", "bare"), args.top, (calls, calls))
    _table(timings, transport, args)
    if not args.no_profile:
        _profile(project, package, flavour, client, args)
    return 0


def _measure(
    client: Client,
    servers: dict[str, Service],
    timings: dict[str, dict[str, list[float]]],
    args: argparse.Namespace,
) -> None:
    """REPEAT rounds, the servers taking turns: calls one by one, then in flight."""
    for _ in range(args.repeat):
        for name, server in servers.items():
            port: int = server.port  # type: ignore[attr-defined]
            assert server.process is not None
            cpu = cpu_seconds(server.process.pid)
            timings[name]["sequential"].append(client.sequential(port, args.calls))
            timings[name]["concurrent"].append(
                client.concurrent(port, args.calls, args.concurrency)
            )
            spent = cpu_seconds(server.process.pid) - cpu
            timings[name]["cpu"].append(spent / (2 * args.calls))


class Client:
    """``Ping`` calls from this process; every status is checked."""

    def __init__(self, package: str) -> None:
        self.grpc = importlib.import_module("grpc")
        self.messages = importlib.import_module(f"{package}.v1.documents_pb2")
        self.stubs = importlib.import_module(f"{package}.v1.documents_pb2_grpc")

    def sequential(self, port: int, calls: int) -> float:
        """Seconds per call, one call after the other on one channel."""
        with self.grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ping = self.stubs.DocumentServiceStub(channel).Ping
            request = self.messages.PingRequest()
            ping(request, timeout=10)
            started = time.perf_counter()
            for _ in range(calls):
                ping(request, timeout=10)
            return (time.perf_counter() - started) / calls

    def concurrent(self, port: int, calls: int, concurrency: int) -> float:
        """Calls per second with ``concurrency`` calls in flight on one grpc.aio channel."""

        async def run() -> float:
            async with self.grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                ping = self.stubs.DocumentServiceStub(channel).Ping
                request = self.messages.PingRequest()
                await ping(request, timeout=10)
                left = calls

                async def caller() -> None:
                    nonlocal left
                    while left > 0:
                        left -= 1
                        await ping(request, timeout=10)

                started = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(concurrency)))
                return calls / (time.perf_counter() - started)

        return asyncio.run(run())


def _bare(project: Path, package: str, flavour: str, env: dict[str, str]) -> Service:
    port, metrics_port = free_port(), free_port()
    command = [project_python(project), str(HERE / "bare" / "grpc_fix.py"), flavour, package,
               str(port), str(metrics_port)]  # fmt: skip
    ready = f"http://127.0.0.1:{metrics_port}/metrics"
    service = Service(command, lambda: http_answers(ready), {**os.environ, **env})
    service.port = port  # type: ignore[attr-defined]
    return service


def _generated(
    project: Path, package: str, command: list[str] | None = None, env: dict[str, str] | None = None
) -> Service:
    port, metrics_port = free_port(), free_port()
    settings = settings_env(
        project,
        host="127.0.0.1",
        port=port,
        metrics_port=metrics_port,
        drain_delay=0,
        # The bare server has no offload pool; one worker process keeps the two alike.
        offload_workers=1,
    )
    ready = f"http://127.0.0.1:{metrics_port}/metrics"
    service = Service(
        command or [project_python(project), "-m", package],
        lambda: http_answers(ready, "service_ready 1.0"),
        {**settings, **(env or {})},
        cwd=project,
    )
    service.port = port  # type: ignore[attr-defined]
    return service


def _table(
    timings: dict[str, dict[str, list[float]]], transport: str, args: argparse.Namespace
) -> None:
    print(f"{transport}: Ping, median of {args.repeat} rounds of {args.calls} calls each way")
    for name, modes in timings.items():
        sequential = statistics.median(modes["sequential"]) * 1e6
        concurrent = statistics.median(modes["concurrent"])
        cpu = statistics.median(modes["cpu"]) * 1e6
        print(
            f"{name:>9}: {sequential:7.1f} µs per call one by one, "
            f"{concurrent:7.0f} calls/s with {args.concurrency} in flight, "
            f"server CPU {cpu:6.1f} µs per call"
        )
    # Per round, then the median: a change in the machine's load hits both alike. Server CPU
    # per call is the steadiest on a shared machine: it hardly depends on who else runs.
    for mode, label in (
        ("sequential", "speed one by one"),
        ("concurrent", "speed in flight"),
        ("cpu", "server CPU per call"),
    ):
        pairs = zip(timings["bare"][mode], timings["generated"][mode], strict=True)
        ratios = [g / b if mode == "concurrent" else b / g for b, g in pairs]
        print(
            f"generated / bare, {label}: {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f})"
        )


def _profile(
    project: Path, package: str, flavour: str, client: Client, args: argparse.Namespace
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "server.prof"
        command = [project_python(project), __file__, "--profiled-server", str(out), package,
                   flavour]  # fmt: skip
        with _generated(project, package, command) as server:
            port: int = server.port  # type: ignore[attr-defined]
            client.sequential(port, 200)
            assert server.process is not None
            server.process.send_signal(signal.SIGUSR2)  # start profiling
            client.sequential(port, args.calls)
            client.concurrent(port, args.calls, args.concurrency)
            server.process.send_signal(signal.SIGUSR2)  # stop and write the profile
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        own = pstats.Stats(str(out)).strip_dirs().sort_stats("tottime")
        service = pstats.Stats(str(out)).sort_stats("cumulative")
    for stats, title, restriction in (
        (own, "own time", []),
        (service, "cumulative time, the service's own code", [f"/{package}/"]),
    ):
        text = io.StringIO()
        stats.stream = text  # type: ignore[attr-defined]
        stats.print_stats(*restriction, args.top)
        print(f"\n--- generated server, {2 * args.calls} Ping calls, by {title} ---")
        print(text.getvalue().split("\n\n", 1)[-1].strip().replace(str(project / "src") + "/", ""))


def _profiled_server(out: str, package: str, flavour: str) -> int:
    """The generated server, profiled from one SIGUSR2 to the next (then written to ``out``).

    SIGUSR1 is taken: it makes the service dump its threads' stacks.
    """
    profiler = cProfile.Profile()
    profiling = False

    def toggle(*_: object) -> None:
        nonlocal profiling
        profiling = not profiling
        if profiling:
            profiler.enable()
            return
        profiler.disable()
        profiler.dump_stats(out + ".part")
        os.replace(out + ".part", out)

    signal.signal(signal.SIGUSR2, toggle)
    importlib.import_module(f"{package}.transport.grpc.{flavour}_server").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
