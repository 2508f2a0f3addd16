"""What the generated runtime costs: idle CPU of the stall watchdog, and offload overhead per call.

Three tables:

1. Idle CPU (% of one core) of a process whose event loop does nothing, with the watchdog
   switched on piece by piece: no watchdog, the loop heartbeat alone, heartbeat plus watchdog
   thread, and everything (the thread re-arming faulthandler on every tick). Measured as the
   process's own CPU time (getrusage) over a window, so other load on the machine barely
   matters. Also a synchronous process (gRPC sync) with only the watchdog thread.
2. Busy-loop throughput: trivial coroutines run per second on one loop, with and without the
   watchdog: the share of throughput the watchdog costs under load. Throughput on a shared
   machine is noisier than the effect, so beside it the watchdog thread's own CPU time (from
   the kernel's ``/proc/self/task/<tid>/schedstat``, the thread found by its name) is given as
   a share of the process's CPU and of one core: the cost measured directly. (The heartbeat
   runs on the loop thread; its share is in the throughput change only.)
3. Offload overhead per call for each executor: sequential round trips of a function that does
   nothing, and throughput with several calls in flight; ``watch_handler`` per RPC as well.

Run it with a generated project's interpreter (it imports the project's package)::

    copier copy --trust --defaults . /tmp/svc && (cd /tmp/svc && uv sync)
    /tmp/svc/.venv/bin/python benchmarks/runtime_overhead.py /tmp/svc
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from service import answer

IDLE_MODES = ["none", "heartbeat", "heartbeat+thread", "full"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated service (uv sync done)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle window per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median shown)")
    parser.add_argument("--calls", type=int, default=2000, help="offloaded calls per run")
    parser.add_argument(
        "--busy-only", action="store_true", help="only the busy-loop table (the load-cost one)"
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=1.0, help="length of each busy-loop phase"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    package = answer(args.project, "package_name")
    sys.path.insert(0, str(args.project / "src"))
    if args.child:
        result = CHILDREN[args.child](package, args)
        print(json.dumps(result))
        return 0

    if args.busy_only:
        _print_busy(args)
        return 0
    print("Idle CPU, % of one core (median of runs; threshold 0.1 s, heartbeat every 0.1 s)\n")
    print(
        "| process | watchdog | CPU % | added by the watchdog | watchdog thread CPU % |"
        "\n|---|---|---|---|---|"
    )
    baseline = None
    for mode in IDLE_MODES:
        cpu, thread = _medians(args, "idle", mode, "cpu_percent", "thread_percent")
        baseline = cpu if baseline is None else baseline
        print(
            f"| asyncio | {mode} | {cpu:.3f} | {cpu - baseline:+.3f} | {thread:.3f} |", flush=True
        )
    sync_none, _ = _medians(args, "idle-sync", "none", "cpu_percent", "thread_percent")
    sync_full, thread = _medians(args, "idle-sync", "full", "cpu_percent", "thread_percent")
    print(f"| sync (gRPC) | none | {sync_none:.3f} | +0.000 | 0.000 |")
    print(
        f"| sync (gRPC) | thread+faulthandler | {sync_full:.3f} | {sync_full - sync_none:+.3f} "
        f"| {thread:.3f} |"
    )

    _print_busy(args)
    print("\nOffload overhead per call (a function that does nothing; median of runs)\n")
    print(
        "| executor | sequential µs/call | direct call µs | in flight | calls/s |"
        "\n|---|---|---|---|---|"
    )
    for executor in ("thread", "process"):
        runs = [_child(args, "offload", executor) for _ in range(args.repeat)]
        row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(
            f"| {executor} | {row['sequential_us']:.1f} | {row['direct_us']:.2f} "
            f"| {int(row['in_flight'])} | {row['per_second']:,.0f} |",
            flush=True,
        )
    handler = _median(args, "handler", "full", "per_call_us")
    print(f"\nwatch_handler (one per sync RPC): {handler:.2f} µs per RPC")
    return 0


def _print_busy(args: argparse.Namespace) -> None:
    print(
        "\nBusy loop: trivial coroutines per CPU second, watchdog off and on in turns; "
        f"{args.repeat} runs, each the median of its pairs of phases\n"
    )
    print(
        "| run | none: coroutines per CPU s | full | change | watchdog thread, % of process CPU "
        "| % of one core |\n|---|---|---|---|---|---|"
    )
    runs = [_child(args, "busy", "full") for _ in range(args.repeat)]
    rows = [*enumerate(runs, 1), ("median", _median_of(runs))]
    for label, busy in rows:
        print(
            f"| {label} | {busy['none']:,.0f} | {busy['full']:,.0f} "
            f"| {busy['change_percent']:+.2f} % | {busy['thread_share_percent']:.3f} "
            f"| {busy['thread_core_percent']:.3f} |",
            flush=True,
        )


def _median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _child(args: argparse.Namespace, child: str, mode: str) -> dict[str, float]:
    command = [sys.executable, __file__, str(args.project), "--child", child, "--mode", mode]
    command += ["--idle-seconds", str(args.idle_seconds), "--calls", str(args.calls)]
    command += ["--phase-seconds", str(args.phase_seconds)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def _median(args: argparse.Namespace, child: str, mode: str, key: str) -> float:
    return statistics.median(_child(args, child, mode)[key] for _ in range(args.repeat))


def _medians(args: argparse.Namespace, child: str, mode: str, *keys: str) -> list[float]:
    runs = [_child(args, child, mode) for _ in range(args.repeat)]
    return [statistics.median(run[key] for run in runs) for key in keys]


# -- children: each runs in its own process --------------------------------------------------


def _quiet_logging(package: str) -> None:
    logging_module = importlib.import_module(f"{package}.runtime.logging")
    logging_module.configure_logging("warning", "json", stream=open(os.devnull, "w"))  # noqa: SIM115


def _watchdog(package: str, mode: str) -> Any:
    stall = importlib.import_module(f"{package}.runtime.stall")
    watchdog = stall.StallWatchdog(0.1, lag_interval=0.1, use_faulthandler=mode == "full")
    if mode in ("heartbeat+thread", "full"):
        watchdog.start()
    return watchdog


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _watchdog_thread_cpu() -> float:
    """CPU seconds the watchdog thread has used (0 if it is not running), as the kernel counts
    them: the first field of its schedstat, in nanoseconds."""
    for thread in threading.enumerate():
        if thread.name == "stall-watchdog" and thread.native_id is not None:
            path = Path(f"/proc/self/task/{thread.native_id}/schedstat")
            return int(path.read_text().split()[0]) / 1e9
    return 0.0


def _idle(package: str, args: argparse.Namespace) -> dict[str, float]:
    _quiet_logging(package)

    async def run() -> dict[str, float]:
        watchdog = _watchdog(package, args.mode)
        if args.mode != "none":
            watchdog.watch_loop()
        await asyncio.sleep(1.0)  # let start-up work settle
        cpu, thread, wall = _cpu_seconds(), _watchdog_thread_cpu(), time.perf_counter()
        await asyncio.sleep(args.idle_seconds)
        thread = _watchdog_thread_cpu() - thread
        cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
        watchdog.stop()
        return {"cpu_percent": 100 * cpu / wall, "thread_percent": 100 * thread / wall}

    return asyncio.run(run())


def _idle_sync(package: str, args: argparse.Namespace) -> dict[str, float]:
    _quiet_logging(package)
    watchdog = _watchdog(package, args.mode)
    time.sleep(1.0)
    cpu, thread, wall = _cpu_seconds(), _watchdog_thread_cpu(), time.perf_counter()
    time.sleep(args.idle_seconds)
    thread = _watchdog_thread_cpu() - thread
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    watchdog.stop()
    return {"cpu_percent": 100 * cpu / wall, "thread_percent": 100 * thread / wall}


async def _nothing() -> None:
    return None


def _busy(package: str, args: argparse.Namespace) -> dict[str, float]:
    """Alternate short phases without and with the watchdog in one process: slow drifts in
    the machine's load then hit both alike; the medians of the phases are compared."""
    _quiet_logging(package)
    stall = importlib.import_module(f"{package}.runtime.stall")

    async def phase(seconds: float) -> float:
        done, started, cpu = 0, time.perf_counter(), _cpu_seconds()
        while time.perf_counter() - started < seconds:
            await asyncio.gather(*(_nothing() for _ in range(1000)))
            done += 1000
            await asyncio.sleep(0)  # let timers (the heartbeat) run between batches
        return done / (_cpu_seconds() - cpu)

    async def run() -> dict[str, float]:
        rates: dict[str, list[float]] = {"none": [], "full": []}
        shares: list[float] = []  # the watchdog thread's CPU / the process's, per "full" phase
        cores: list[float] = []  # the watchdog thread's CPU / wall time
        await phase(0.5)  # warm up
        for _ in range(max(5, int(3 * args.idle_seconds))):
            rates["none"].append(await phase(args.phase_seconds))
            watchdog = stall.StallWatchdog(0.1, lag_interval=0.1)
            watchdog.start()
            watchdog.watch_loop()
            cpu, thread, wall = _cpu_seconds(), _watchdog_thread_cpu(), time.perf_counter()
            rates["full"].append(await phase(args.phase_seconds))
            thread = _watchdog_thread_cpu() - thread
            cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
            watchdog.stop()
            shares.append(100 * thread / cpu)
            cores.append(100 * thread / wall)
        ratios = [full / none for none, full in zip(rates["none"], rates["full"], strict=True)]
        return {
            "none": statistics.median(rates["none"]),
            "full": statistics.median(rates["full"]),
            "change_percent": 100 * (statistics.median(ratios) - 1),
            "thread_share_percent": statistics.median(shares),
            "thread_core_percent": statistics.median(cores),
        }

    return asyncio.run(run())


def noop() -> None:
    """The offloaded function: all the time measured is the offloader's."""


def _offload(package: str, args: argparse.Namespace) -> dict[str, float]:
    _quiet_logging(package)
    offload = importlib.import_module(f"{package}.runtime.offload")
    context = importlib.import_module(f"{package}.runtime.context")
    workers = 2
    offloader = offload.Offloader(args.mode, workers=workers, queue_size=4 * workers)
    offloader.start()

    async def run() -> dict[str, float]:
        with context.bind("bench-request"):
            for _ in range(100):  # warm up
                await offloader.run(noop)
            started = time.perf_counter()
            for _ in range(args.calls):
                await offloader.run(noop)
            sequential = (time.perf_counter() - started) / args.calls
            in_flight = 4 * workers
            started = time.perf_counter()
            for _ in range(args.calls // in_flight):
                await asyncio.gather(*(offloader.run(noop) for _ in range(in_flight)))
            per_second = (args.calls // in_flight) * in_flight / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(args.calls):
            noop()
        direct = (time.perf_counter() - started) / args.calls
        return {
            "sequential_us": sequential * 1e6,
            "direct_us": direct * 1e6,
            "in_flight": in_flight,
            "per_second": per_second,
        }

    try:
        return asyncio.run(run())
    finally:
        offloader.shutdown(5.0)


def _handler(package: str, args: argparse.Namespace) -> dict[str, float]:
    _quiet_logging(package)
    watchdog = _watchdog(package, args.mode)
    rounds = 100_000
    started = time.perf_counter()
    for _ in range(rounds):
        with watchdog.watch_handler("/bench.v1.Bench/Call", request_id="bench"):
            pass
    per_call = (time.perf_counter() - started) / rounds
    watchdog.stop()
    return {"per_call_us": per_call * 1e6}


CHILDREN = {
    "idle": _idle,
    "idle-sync": _idle_sync,
    "busy": _busy,
    "offload": _offload,
    "handler": _handler,
}

if __name__ == "__main__":
    sys.exit(main())
