"""Where a light request's time goes: the generated FastAPI app against the bare fix, in-process.

Calls each ASGI app directly (no sockets, no uvicorn) with ``GET /v1/ping`` N times on one
event loop, so what is measured is the per-request plumbing above the server: middleware,
routing, request context, access log, metrics. Prints the CPU microseconds per request of the
generated app, of the same app without its middleware (routing and endpoint only) and of the
bare app (median of REPEAT rounds), then cProfile's view of the generated app: the functions
with the most time of their own, and the middleware layers by cumulative time.

Run it with a generated FastAPI project's interpreter::

    build/seed-load-test/fastapi/.venv/bin/python benchmarks/light_path_profile.py \
        build/seed-load-test/fastapi

The access log goes to /dev/null at the level the service logs at by default (info): its
formatting is measured, the terminal is not.

With ``--wrk SECONDS`` it then measures the same over the network: both apps as servers
(uvicorn, uvloop, httptools; one offload worker each), one after the other, REPEAT rounds,
each loaded by wrk on ``GET /v1/ping`` for SECONDS. It prints requests per second and the
server's CPU time per request (medians of the rounds), and generated / bare for both (the
median of the rounds' ratios). On a shared machine the CPU ratio is the steadier one; with
``--pin`` each server runs on the first CPU and wrk on the others, and the rounds' ratios
spread less again. With ``--perf`` Linux perf samples both servers meanwhile, and a table
says where each one's CPU went, by Python function (``perf_samples.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import importlib
import io
import os
import pstats
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import perf_samples
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

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated FastAPI project (uv sync done)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--wrk", type=float, metavar="SECONDS", help="then measure over HTTP")
    parser.add_argument("--connections", type=int, default=96, help="wrk's connections")
    parser.add_argument(
        "--pin", action="store_true", help="with --wrk: each server on the first CPU, wrk elsewhere"
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="with --wrk: also sample the servers with Linux perf, and print where their CPU "
        "went by Python function (perf_samples.py)",
    )
    args = parser.parse_args()
    if args.perf and (reason := perf_samples.unavailable()):
        parser.error(f"--perf: {reason}")
    package = answer(args.project, "package_name")
    os.environ.setdefault(f"{package.upper()}_OFFLOAD_WORKERS", "1")
    # The harness runs requests back to back: a stall report would be about the harness.
    os.environ.setdefault(f"{package.upper()}_STALL_THRESHOLD", "60")
    sys.path.insert(0, str(args.project / "src"))

    generated = _generated_app(package)
    # The same app without the service's middleware: what routing and the endpoint cost.
    unwrapped = _generated_app(package)
    unwrapped.user_middleware = []
    bare = _bare_app(package)
    apps = {"generated": generated, "generated, no middleware": unwrapped, "bare": bare}

    async def run() -> None:
        for app in apps.values():
            await _lifespan(app, "startup")
        timings: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.repeat):
            for name, app in apps.items():
                timings[name].append(await _per_request(app, args.requests))
        bare_time = statistics.median(timings["bare"])
        for name, values in timings.items():
            spent = statistics.median(values)
            print(
                f"{name:>24}: {spent * 1e6:7.1f} µs of CPU per GET /v1/ping, "
                f"bare / this {bare_time / spent:.2f}"
            )

        profiler = cProfile.Profile()
        profiler.enable()
        await _per_request(generated, args.requests)
        profiler.disable()
        for sort, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort)
            stats.print_stats(args.top)
            print(f"\n--- generated app, {args.requests} requests, by {title} ---")
            print(out.getvalue().split("\n\n", 1)[-1].strip())
        for app in apps.values():
            await _lifespan(app, "shutdown")

    asyncio.run(run())
    if args.wrk:
        _over_the_network(args, package)
    return 0


def _over_the_network(args: argparse.Namespace, package: str) -> None:
    runs: dict[str, list[tuple[float, float]]] = {"generated": [], "bare": []}
    pids: dict[str, set[int]] = {"generated": set(), "bare": set()}
    profile = perf_samples.SystemProfile() if args.perf else None
    _wrk_rounds(args, package, runs, pids, profile)
    if profile is not None:
        print(f"--- perf: {args.repeat} rounds of {args.wrk:g} s of wrk on each server ---")
        counts = profile.by_function(pids["generated"], pids["bare"])
        # wrk's rate over its duration: the requests each server served while recorded
        generated, bare = (round(sum(r for r, _ in runs[name]) * args.wrk) for name in runs)
        perf_samples.print_comparison(counts, ("generated", "bare"), args.top, (generated, bare))
    for name, results in runs.items():
        rates = [rate for rate, _ in results]
        cpu = statistics.median(cpu for _, cpu in results)
        print(
            f"{name:>9}: {statistics.median(rates):7,.0f} requests/s over HTTP "
            f"({', '.join(f'{rate:,.0f}' for rate in rates)}), "
            f"server CPU {cpu * 1e6:5.1f} µs per request"
        )
    rate_ratios, cpu_ratios = [], []
    for (rate, cpu), (bare_rate, bare_cpu) in zip(*runs.values(), strict=True):
        rate_ratios.append(rate / bare_rate)
        cpu_ratios.append(bare_cpu / cpu)
    for what, ratios in (("requests/s", rate_ratios), ("server CPU", cpu_ratios)):
        print(
            f"generated / bare over HTTP, {what}: {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{ratio:.2f}' for ratio in ratios)})"
        )


def _wrk_rounds(
    args: argparse.Namespace,
    package: str,
    runs: dict[str, list[tuple[float, float]]],
    pids: dict[str, set[int]],
    profile: perf_samples.SystemProfile | None,
) -> None:
    """REPEAT rounds, each server in turn started, loaded by wrk for ``--wrk`` seconds, stopped;
    with ``profile``, perf records while wrk runs."""
    project, python = args.project, project_python(args.project)
    if args.pin:  # wrk, started from here, inherits the other CPUs
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {0})
    extra = perf_samples.SERVER_ENV if args.perf else {}
    for _ in range(args.repeat):
        for name, results in runs.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}/v1/ping"
            if name == "bare":
                command = [python, str(HERE / "bare" / "http_fix.py"), package, str(port)]
                env = {**os.environ, **extra}
            else:
                command = [python, "-m", package]
                env = settings_env(project, port=port, host="127.0.0.1", offload_workers=1)
                env.update(extra)
            ready = functools.partial(http_answers, url)
            with Service(command, ready, env, cwd=project) as server:
                assert server.process is not None
                pids[name].add(server.process.pid)
                if args.pin:
                    pin(server.process.pid, {0})
                with profile.recording() if profile is not None else nullcontext():
                    results.append(wrk(url, args.wrk, args.connections, server.process.pid))


def _generated_app(package: str) -> Any:
    settings_module = importlib.import_module(f"{package}.transport.http.settings")
    logging_module = importlib.import_module(f"{package}.runtime.logging")
    lifecycle = importlib.import_module(f"{package}.runtime.lifecycle")
    app_module = importlib.import_module(f"{package}.transport.http.app")
    settings = importlib.import_module(f"{package}.runtime.settings").load_settings(
        settings_module.HttpSettings
    )
    logging_module.configure_logging(
        settings.log_level,
        settings.log_format,
        stream=open(os.devnull, "w"),  # noqa: SIM115
    )
    return app_module.create_app(lifecycle.Runtime(settings), settings)


def _bare_app(package: str) -> Any:
    sys.argv = [sys.argv[0], package, "0"]
    sys.path.insert(0, str(HERE / "bare"))
    return importlib.import_module("http_fix").app


async def _lifespan(app: Any, phase: str) -> None:
    messages = [{"type": f"lifespan.{phase}"}]
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await done.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith(f"lifespan.{phase}."):
            done.set()

    if phase == "startup":
        asyncio.get_running_loop().create_task(app({"type": "lifespan"}, receive, send))
        # The app answers startup.complete once its runtime (offload pool, watchdog) is up.
        await asyncio.wait_for(done.wait(), 60)
    # Shutdown: the process ends right after; the task is left to the loop's teardown.


async def _per_request(app: Any, count: int) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/ping",
        "raw_path": b"/v1/ping",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"user-agent", b"wrk")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    # CPU time, not wall time: on a shared machine, time spent waiting for a core is noise.
    started = time.process_time()
    for index in range(count):
        await app(dict(scope), receive, send)
        if index % 100 == 0:
            await asyncio.sleep(0)  # let the heartbeat and other callbacks run, as in a server
    elapsed = time.process_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"GET /v1/ping answered {sorted(set(statuses))}, not only 200")
    return elapsed / count


if __name__ == "__main__":
    sys.exit(main())
