"""One phase of the seed's load test against a running server; prints the outcome as JSON.

Runs with the generated project's interpreter (gRPC clients need its grpcio and stubs), started
by ``seed_load_test.py``. For DURATION seconds, all at once:

* light load: wrk with CONNECTIONS connections on ``GET /v1/ping`` (HTTP), or CONNECTIONS
  ``Ping`` calls kept in flight by CLIENTS processes on grpc.aio (gRPC; every status checked);
* heavy load: HEAVY clients, each keeping one validation of the heavy document in flight;
* a prober: one light request every 200 ms on a fresh connection, failed if it takes > 1 s;
* a scraper: the server's ``/metrics`` every second, for its event-loop lag histogram;
* with ``--server-pid``, the CPU time the server process (all its threads) and its child
  processes (the offload workers) used, and how busy the whole machine was.

Heavy clients start first and the clock starts once each has had one answer, so the phase
measures the steady state, not the ramp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib
import json
import multiprocessing
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service import TICK, process_cpu

PROBE_INTERVAL = 0.2
PROBE_TIMEOUT = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["http", "grpc"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-url", required=True)
    parser.add_argument("--package", help="the project's package (gRPC stubs)")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=96)
    parser.add_argument("--clients", type=int, default=2, help="gRPC load processes")
    parser.add_argument("--heavy", type=int, default=0)
    parser.add_argument("--heavy-document", type=Path)
    parser.add_argument("--server-pid", type=int, help="measure this process's CPU time")
    args = parser.parse_args()

    stop = threading.Event()
    clock = Clock()
    heavy = HeavyLoad(args, stop)
    heavy.start()
    heavy.wait_until_each_answered(deadline=60)
    clock.start()
    cpu = CpuMeter(args.server_pid)
    heavy.reset()
    probes = Prober(args, clock, stop)
    scraper = Scraper(args.metrics_url, clock, stop)
    scraper.scrape()
    probes.start()
    scraper.start()
    light = light_http(args) if args.kind == "http" else light_grpc(args)
    elapsed = clock.now()
    used = cpu.used()
    heavy_done = heavy.done
    stop.set()
    for watcher in (probes, scraper):
        watcher.join(300)
    scraper.scrape()  # the phase's last window, whatever the periodic scrapes missed
    for thread in heavy.threads:
        thread.join(300)
    result = {
        "light": light,
        "heavy": {
            "clients": args.heavy,
            "done": heavy_done,
            "per_second": heavy_done / elapsed,
            "failed": heavy.failed,
        },
        "probes": probes.summary(),
        "lag": scraper.summary(),
        "cpu": used,
    }
    print(json.dumps(result))
    return 0


class CpuMeter:
    """CPU time used from now until :meth:`used`: by the server process (``pid``, all its
    threads), by the processes under it (its offload workers), and by the whole machine.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.before = self._read()

    def used(self) -> dict[str, float]:
        """CPU seconds per second of the window: ``server``, ``children``, and ``machine``
        (busy CPUs: 2.0 is two CPUs busy throughout)."""
        spent = self.spent()
        elapsed = time.monotonic() - self.started
        return {name: seconds / elapsed for name, seconds in spent.items()}

    def spent(self) -> dict[str, float]:
        """CPU seconds used so far: ``server``, ``children``, and ``machine`` (all CPUs')."""
        after = self._read()
        names = ("server", "children", "machine")
        return {
            name: late - early for name, early, late in zip(names, self.before, after, strict=True)
        }

    def _read(self) -> tuple[float, float, float]:
        machine = _machine_busy()
        if self.pid is None:
            return float("nan"), float("nan"), machine
        stats = _process_stats()
        under = _descendants(self.pid, {pid: parent for pid, (parent, _) in stats.items()})
        server = stats.get(self.pid, (0, 0.0))[1]
        return server, sum(stats[pid][1] for pid in under), machine


def _process_stats() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds so far (user and system, all threads)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # ended meanwhile
                stats[int(entry.name)] = process_cpu(int(entry.name))
    return stats


def _descendants(pid: int, parents: dict[int, int]) -> set[int]:
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _machine_busy() -> float:
    """CPU seconds the machine has spent busy (neither idle nor waiting for I/O), all CPUs."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK  # guest time is in user time already


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.started


# -- light load -------------------------------------------------------------------------------


def light_http(args: argparse.Namespace) -> dict[str, Any]:
    wrk = subprocess.run(
        [
            "wrk",
            "--latency",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.duration:g}s",
            f"http://127.0.0.1:{args.port}/v1/ping",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if wrk.returncode != 0:  # recorded, not fatal: one failed phase must not end the run
        failure = (wrk.stderr or wrk.stdout).strip()
        nan = float("nan")
        return {"per_second": nan, "p50_ms": nan, "p90_ms": nan, "errors": 1, "failure": failure}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", wrk.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk.stdout)
    socket_errors = re.search(r"Socket errors: (.*)", wrk.stdout)
    return {
        "per_second": float(rate.group(1)) if rate else float("nan"),
        "p50_ms": _wrk_latency_ms(wrk.stdout, "50%"),
        "p90_ms": _wrk_latency_ms(wrk.stdout, "90%"),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def _wrk_latency_ms(report: str, percentile: str) -> float:
    match = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", report, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def light_grpc(args: argparse.Namespace) -> dict[str, Any]:
    share = [args.connections // args.clients] * args.clients
    share[0] += args.connections - sum(share)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.clients) as pool:
        parts = pool.starmap(
            _grpc_client, [(args.package, args.port, n, args.duration) for n in share]
        )
    latencies = sorted(latency for part in parts for latency in part["latencies"])
    done = len(latencies)
    return {
        "per_second": done / args.duration,
        "p50_ms": _quantile(latencies, 0.5) * 1000,
        "p90_ms": _quantile(latencies, 0.9) * 1000,
        "errors": sum(part["errors"] for part in parts),
    }


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def _grpc_client(package: str, port: int, concurrency: int, duration: float) -> dict[str, Any]:
    """One load process: ``concurrency`` Ping calls kept in flight on one channel."""
    grpc = importlib.import_module("grpc")
    messages = importlib.import_module(f"{package}.v1.documents_pb2")
    stubs = importlib.import_module(f"{package}.v1.documents_pb2_grpc")

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        request = messages.PingRequest()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ping = stubs.DocumentServiceStub(channel).Ping
            await ping(request, timeout=10)  # connected before the clock starts
            deadline = time.perf_counter() + duration

            async def client() -> None:
                nonlocal errors
                while (started := time.perf_counter()) < deadline:
                    try:
                        await ping(request, timeout=30)
                    except grpc.RpcError:
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(client() for _ in range(concurrency)))
        return {"latencies": latencies, "errors": errors}

    return asyncio.run(run())


# -- heavy load -------------------------------------------------------------------------------


class HeavyLoad:
    """``args.heavy`` threads, each keeping one heavy validation in flight until ``stop``."""

    def __init__(self, args: argparse.Namespace, stop: threading.Event) -> None:
        self.stop = stop
        self.failed = 0
        self.done = 0
        self.answered: set[int] = set()
        self.lock = threading.Lock()
        send = _heavy_http if args.kind == "http" else _heavy_grpc
        document = args.heavy_document.read_bytes() if args.heavy else b""
        self.threads = [
            threading.Thread(target=self._keep_one, args=(i, send(args, document)), daemon=True)
            for i in range(args.heavy)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_until_each_answered(self, deadline: float) -> None:
        until = time.monotonic() + deadline
        while len(self.answered) < len(self.threads) and time.monotonic() < until:
            time.sleep(0.05)

    def reset(self) -> None:
        with self.lock:
            self.done = 0
            self.failed = 0

    def _keep_one(self, index: int, send: Callable[[], bool]) -> None:
        while not self.stop.is_set():
            ok = send()
            with self.lock:
                self.answered.add(index)
                if ok:
                    self.done += 1
                else:
                    self.failed += 1


def _heavy_http(args: argparse.Namespace, document: bytes) -> Callable[[], bool]:
    connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=300)
    headers = {"content-type": "application/json"}

    def send() -> bool:
        try:
            connection.request("POST", "/v1/documents:validate", document, headers)
            response = connection.getresponse()
            response.read()
        except OSError:
            connection.close()
            return False
        return response.status == 200

    return send


def _heavy_grpc(args: argparse.Namespace, document: bytes) -> Callable[[], bool]:
    grpc = importlib.import_module("grpc")
    messages = importlib.import_module(f"{args.package}.v1.documents_pb2")
    stubs = importlib.import_module(f"{args.package}.v1.documents_pb2_grpc")
    # One channel each: with a shared one, its connection would carry every heavy request.
    options = [("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}", options=options)
    validate = stubs.DocumentServiceStub(channel).Validate
    request = messages.ValidateRequest(document_json=document.decode())

    def send() -> bool:
        try:
            validate(request, timeout=300)
        except grpc.RpcError:
            return False
        return True

    return send


# -- observers --------------------------------------------------------------------------------


class Prober(threading.Thread):
    """A light request every 200 ms, as a load balancer's health check would send it."""

    def __init__(self, args: argparse.Namespace, clock: Clock, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.clock = clock
        self.stop = stop
        self.samples: list[tuple[float, float | None]] = []  # (time, seconds or None: failed)
        self.probe = _probe_http(args.port) if args.kind == "http" else _probe_grpc(args)

    def run(self) -> None:
        next_probe = time.monotonic()
        while not self.stop.is_set():
            at = self.clock.now()
            started = time.monotonic()
            ok = self.probe()
            took = time.monotonic() - started
            self.samples.append((at, took if ok and took <= PROBE_TIMEOUT else None))
            next_probe += PROBE_INTERVAL
            self.stop.wait(max(0.0, next_probe - time.monotonic()))

    def summary(self) -> dict[str, Any]:
        answered = [took for _, took in self.samples if took is not None]
        return {
            "sent": len(self.samples),
            "failed": len(self.samples) - len(answered),
            "p50_ms": statistics.median(answered) * 1000 if answered else float("nan"),
            "series": self.samples,
        }


def _probe_http(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
        try:
            connection.request("GET", "/v1/ping")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    return probe


def _probe_grpc(args: argparse.Namespace) -> Callable[[], bool]:
    grpc = importlib.import_module("grpc")
    messages = importlib.import_module(f"{args.package}.v1.documents_pb2")
    stubs = importlib.import_module(f"{args.package}.v1.documents_pb2_grpc")
    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}")
    ping = stubs.DocumentServiceStub(channel).Ping

    def probe() -> bool:
        try:
            ping(messages.PingRequest(), timeout=PROBE_TIMEOUT)
        except grpc.RpcError:
            return False
        return True

    return probe


LAG_METRIC = "eventloop_lag_seconds"


class Scraper(threading.Thread):
    """The server's own event-loop lag histogram, read every second."""

    def __init__(self, url: str, clock: Clock, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.clock = clock
        self.stop = stop
        self.scrapes: list[tuple[float, Histogram]] = []

    def scrape(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as response:
                text = response.read().decode()
        except Exception:
            return
        self.scrapes.append((self.clock.now(), Histogram.parse(text)))

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.scrape()

    def summary(self) -> dict[str, Any]:
        if len(self.scrapes) < 2 or self.scrapes[-1][1].count == self.scrapes[0][1].count:
            return {"p90_ms": None, "mean_ms": None, "series": []}
        whole = self.scrapes[-1][1] - self.scrapes[0][1]
        series = []
        for (_, before), (at, after) in zip(self.scrapes, self.scrapes[1:], strict=False):
            window = after - before
            if window.count:
                series.append((at, window.mean() * 1000, window.quantile(0.9) * 1000))
        return {
            "p90_ms": whole.quantile(0.9) * 1000,
            "mean_ms": whole.mean() * 1000,
            "series": series,
        }


class Histogram:
    """A Prometheus histogram's cumulative buckets, as scraped."""

    def __init__(self, buckets: list[tuple[float, float]], total: float, count: float) -> None:
        self.buckets = buckets  # (upper bound, cumulative count), ascending
        self.total = total
        self.count = count

    @classmethod
    def parse(cls, text: str) -> Histogram:
        buckets = [
            (float(le), float(value))
            for le, value in re.findall(
                rf'^{LAG_METRIC}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.MULTILINE
            )
        ]
        total = re.search(rf"^{LAG_METRIC}_sum (\S+)$", text, re.MULTILINE)
        count = re.search(rf"^{LAG_METRIC}_count (\S+)$", text, re.MULTILINE)
        return cls(
            sorted(buckets),
            float(total.group(1)) if total else 0.0,
            float(count.group(1)) if count else 0.0,
        )

    def __sub__(self, other: Histogram) -> Histogram:
        earlier = dict(other.buckets)
        return Histogram(
            [(le, value - earlier.get(le, 0.0)) for le, value in self.buckets],
            self.total - other.total,
            self.count - other.count,
        )

    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def quantile(self, q: float) -> float:
        """Like PromQL's histogram_quantile: linear within the bucket that holds the rank."""
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for upper_bound, cumulative in self.buckets:
            if cumulative >= rank:
                if upper_bound == float("inf"):
                    return lower_bound
                share = (rank - lower_count) / max(cumulative - lower_count, 1e-12)
                return lower_bound + (upper_bound - lower_bound) * share
            lower_bound, lower_count = upper_bound, cumulative
        return lower_bound


if __name__ == "__main__":
    sys.exit(main())
