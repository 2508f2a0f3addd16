"""Where a light request's time goes: the generated FastAPI app against the bare fix, in-process.

Calls each ASGI app directly (no sockets, no uvicorn) with ``GET /v1/ping`` N times on one
event loop, so what is measured is the per-request plumbing above the server: middleware,
routing, request context, access log, metrics. Prints microseconds per request for both apps
(median of REPEAT rounds), then cProfile's view of the generated app: the functions with the
most time of their own, and the middleware layers by cumulative time.

Run it with a generated FastAPI project's interpreter::

    build/seed-load-test/fastapi/.venv/bin/python benchmarks/light_path_profile.py \
        build/seed-load-test/fastapi

The access log goes to /dev/null at the level the service logs at by default (info): its
formatting is measured, the terminal is not.

With ``--wrk SECONDS`` it then measures the same over the network: both apps as servers
(uvicorn, uvloop, httptools; one offload worker each), one after the other, REPEAT rounds,
each loaded by wrk on ``GET /v1/ping`` for SECONDS; it prints requests per second (median of
the rounds) and the median of the rounds' bare / generated ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from service import Service, answer, free_port, http_answers, project_python, settings_env

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated FastAPI project (uv sync done)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--wrk", type=float, metavar="SECONDS", help="then measure over HTTP")
    parser.add_argument("--connections", type=int, default=96, help="wrk's connections")
    args = parser.parse_args()
    package = answer(args.project, "package_name")
    os.environ.setdefault(f"{package.upper()}_OFFLOAD_WORKERS", "1")
    # The harness runs requests back to back: a stall report would be about the harness.
    os.environ.setdefault(f"{package.upper()}_STALL_THRESHOLD", "60")
    sys.path.insert(0, str(args.project / "src"))

    generated = _generated_app(package)
    bare = _bare_app(package)

    async def run() -> None:
        for app in (generated, bare):
            await _lifespan(app, "startup")
        timings: dict[str, list[float]] = {"generated": [], "bare": []}
        for _ in range(args.repeat):
            for name, app in (("generated", generated), ("bare", bare)):
                timings[name].append(await _per_request(app, args.requests))
        for name, values in timings.items():
            print(f"{name:>9}: {statistics.median(values) * 1e6:7.1f} µs per GET /v1/ping")
        ratio = statistics.median(timings["bare"]) / statistics.median(timings["generated"])
        print(f"bare / generated: {ratio:.2f} (the share of bare speed the plumbing leaves)")

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
        for app in (generated, bare):
            await _lifespan(app, "shutdown")

    asyncio.run(run())
    if args.wrk:
        _over_the_network(args.project, package, args.repeat, args.wrk, args.connections)
    return 0


def _over_the_network(
    project: Path, package: str, repeat: int, seconds: float, connections: int
) -> None:
    python = project_python(project)
    rates: dict[str, list[float]] = {"generated": [], "bare": []}
    for _ in range(repeat):
        for name in rates:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            if name == "bare":
                command = [python, str(HERE / "bare" / "http_fix.py"), package, str(port)]
                env = None
            else:
                command = [python, "-m", package]
                env = settings_env(project, port=port, host="127.0.0.1", offload_workers=1)
            with Service(command, lambda: http_answers(f"{url}/v1/ping"), env, cwd=project):
                rates[name].append(_wrk(f"{url}/v1/ping", seconds, connections))
    for name, values in rates.items():
        spread = ", ".join(f"{value:,.0f}" for value in values)
        print(f"{name:>9}: {statistics.median(values):7,.0f} requests/s over HTTP ({spread})")
    ratios = [bare / generated for generated, bare in zip(*rates.values(), strict=True)]
    print(
        f"bare / generated over HTTP: {statistics.median(ratios):.2f} "
        f"(rounds: {', '.join(f'{ratio:.2f}' for ratio in ratios)})"
    )


def _wrk(url: str, seconds: float, connections: int) -> float:
    wrk = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "Non-2xx" in wrk.stdout or "Socket errors" in wrk.stdout:
        raise SystemExit(f"wrk saw errors:\n{wrk.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", wrk.stdout)
    assert rate is not None, wrk.stdout
    return float(rate.group(1))


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
