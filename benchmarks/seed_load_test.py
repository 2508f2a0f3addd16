"""The seed article's load test: generated services side by side with the bare fix.

The scenario: 96 connections of light requests (``GET /v1/ping`` with wrk, or gRPC ``Ping``
from a multi-process grpc.aio client) while 4 clients each keep one heavy validation in flight
(a 0.9 MB JSON document whose parsing and regex checks cost ~0.1-0.3 s of CPU), and a prober
sends one light request every 200 ms on a fresh connection (failed if it takes over 1 s).

One command renders the services with copier from this repository (nothing is edited by
hand: the heavy endpoint is the template's own example), syncs their environments, and runs
every row of the chosen families in turn, REPEAT times, interleaved, so a change in the
machine's load hits every row alike. Each run measures light traffic without heavy load,
then with it. It prints medians (and the spread) and writes PNG charts for docs/benchmarks.md.

    uv run --group bench python benchmarks/seed_load_test.py              # both families
    uv run --group bench python benchmarks/seed_load_test.py --family http --repeat 5

Needs wrk (``scripts/debian-tools.sh wrk``) and uv. Client, servers and workers share the
machine's CPUs: compare rows of one run, never numbers from different machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import Service, answer, free_port, http_answers, project_python, settings_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Row:
    """One server configuration of the table."""

    label: str
    transport: str  # the rendered project it uses (its package, stubs and interpreter)
    bare: str = ""  # "", "http", "grpc-sync" or "grpc-aio": a bare reference, not the service
    settings: dict[str, object] = field(default_factory=dict)


FAMILIES = {
    "http": [
        Row("bare fix (FastAPI, 1 worker process)", "fastapi", bare="http"),
        Row("generated, defaults", "fastapi"),
        # The default before workers left the loop a CPU: a worker on every CPU, niced.
        Row(
            "generated, a worker per CPU",
            "fastapi",
            settings={"offload_workers": len(os.sched_getaffinity(0))},
        ),
        Row("generated, thread executor", "fastapi", settings={"offload_executor": "thread"}),
    ],
    "grpc": [
        Row("bare grpcio (threads, 1 worker process)", "grpc", bare="grpc-sync"),
        Row("generated grpc, defaults", "grpc"),
        Row("bare grpc.aio (1 worker process)", "grpc_aio", bare="grpc-aio"),
        Row("generated grpc_aio, defaults", "grpc_aio"),
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="http,grpc", help="http, grpc, or both as http,grpc")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every row (>= 3)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=96, help="light connections/calls")
    parser.add_argument("--heavy", type=int, default=4, help="heavy validations in flight")
    parser.add_argument("--size", type=int, default=900_000, help="heavy document bytes")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "seed-load-test")
    parser.add_argument("--charts", type=Path, default=REPO / "docs" / "benchmarks")
    parser.add_argument("--vcs-ref", default="HEAD", help="template revision to render")
    parser.add_argument("--no-render", action="store_true", help="reuse rendered projects")
    parser.add_argument(
        "--from-results", type=Path, help="print and draw a saved results.json, measure nothing"
    )
    args = parser.parse_args()
    try:
        import charts  # matplotlib, loaded now: a missing one fails before the long run
    except ImportError as error:
        parser.error(f"{error}: run it with `uv run --group bench python {sys.argv[0]}`")
    if args.from_results:
        saved = json.loads(args.from_results.read_text())
        report(saved, [name for name in FAMILIES if name in saved["families"]], args, charts)
        return 0
    families = [name.strip() for name in args.family.split(",")]
    if unknown := set(families) - FAMILIES.keys():
        parser.error(f"unknown family {', '.join(sorted(unknown))}: use http and/or grpc")
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: the table shows medians")
    for tool in ("wrk", "uv"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (wrk: scripts/debian-tools.sh wrk)")

    rows = [row for name in families for row in FAMILIES[name]]
    projects = {}
    for transport in sorted({row.transport for row in rows}):
        projects[transport] = args.work / transport
        if not args.no_render:
            render(transport, projects[transport], args.vcs_ref)
    document = args.work / "heavy.json"
    first = projects[rows[0].transport]
    made = subprocess.run(
        [project_python(first), str(HERE / "heavy_document.py"), answer(first, "package_name"),
         str(document), "--size", str(args.size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    heavy = json.loads(made.stdout)
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    print(
        f"heavy document: {heavy['bytes']:,} bytes, {heavy['cpu_seconds'] * 1000:.0f} ms CPU to "
        f"parse and check; {args.heavy} in flight; {args.connections} light connections; "
        f"{args.duration:g} s per phase; {args.repeat} runs",
        flush=True,
    )

    runs: dict[str, list[dict[str, Any]]] = {row.label: [] for row in rows}
    for repetition in range(args.repeat):
        for row in rows:
            print(f"  run {repetition + 1}/{args.repeat}: {row.label}", file=sys.stderr, flush=True)
            runs[row.label].append(measure(row, projects[row.transport], document, args))

    results = {
        "machine": machine,
        "command": " ".join(["benchmarks/seed_load_test.py", *sys.argv[1:]]),
        "heavy_document": heavy,
        "settings": {
            "duration": args.duration,
            "connections": args.connections,
            "heavy": args.heavy,
            "repeat": args.repeat,
        },
        "families": {name: [row.label for row in FAMILIES[name]] for name in families},
        "runs": runs,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    report(results, families, args, charts)
    print(f"raw results: {args.work / 'results.json'}")
    return 0


def report(results: dict[str, Any], families: list[str], args: Any, charts: Any) -> None:
    """The tables on stdout, the charts as PNG files."""
    runs = results["runs"]
    print(f"machine: {results['machine']}\ncommand: {results['command']}")
    for name in families:
        print()
        print(table(FAMILIES[name], runs))
    args.charts.mkdir(parents=True, exist_ok=True)
    for name in families:
        for path in charts.draw(name, FAMILIES[name], runs, results, args.charts):
            print(f"chart: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def render(transport: str, destination: Path, vcs_ref: str) -> None:
    """The template's defaults plus ``transport``, with its own synced environment."""
    from copier import run_copy

    if destination.exists():
        shutil.rmtree(destination)
    print(f"rendering {transport} into {destination} ...", file=sys.stderr, flush=True)
    run_copy(
        str(REPO),
        str(destination),
        data={"transport": transport},
        defaults=True,
        unsafe=True,
        vcs_ref=vcs_ref,
        quiet=True,
    )
    python = answer(destination, "python_version")
    subprocess.run(["uv", "sync", "--quiet", "--python", python], cwd=destination, check=True)


def measure(row: Row, project: Path, document: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start the row's server; one phase without heavy load, one with it."""
    package = answer(project, "package_name")
    port, metrics_port = free_port(), free_port()
    python = project_python(project)
    kind = "http" if row.transport == "fastapi" else "grpc"
    if row.bare == "http":
        command = [python, str(HERE / "bare" / "http_fix.py"), package, str(port)]
        metrics = f"http://127.0.0.1:{port}/metrics"
        service = Service(command, lambda: http_answers(metrics), cwd=project)
    elif row.bare:
        flavour = row.bare.removeprefix("grpc-")
        command = [python, str(HERE / "bare" / "grpc_fix.py"), flavour, package, str(port),
                   str(metrics_port)]  # fmt: skip
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        service = Service(command, lambda: http_answers(metrics), cwd=project)
    else:
        settings: dict[str, object] = {"host": "127.0.0.1", "port": port, "drain_delay": 0}
        if kind == "http":
            metrics = f"http://127.0.0.1:{port}/metrics"
            ready = f"http://127.0.0.1:{port}/readyz"
        else:
            settings["metrics_port"] = metrics_port
            metrics = ready = f"http://127.0.0.1:{metrics_port}/metrics"
        env = settings_env(project, **settings, **row.settings)
        service = Service(
            [python, "-m", package],
            lambda: http_answers(ready, "" if kind == "http" else "service_ready 1.0"),
            env,
            cwd=project,
        )
    phases = {}
    with service:
        for name, heavy in (("alone", 0), ("with_heavy", args.heavy)):
            phase = subprocess.run(
                [python, str(HERE / "load_phase.py"), "--kind", kind, "--port", str(port),
                 "--metrics-url", metrics, "--package", package, "--duration", str(args.duration),
                 "--connections", str(args.connections), "--heavy", str(heavy),
                 "--heavy-document", str(document), "--server-pid", str(service.pid)],
                capture_output=True, text=True, check=False, cwd=project,
            )  # fmt: skip
            if phase.returncode != 0:
                raise SystemExit(f"{row.label}, {name}: load_phase failed:\n{phase.stderr}")
            phases[name] = json.loads(phase.stdout.strip().splitlines()[-1])
    return phases


# -- the table --------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    values = [value for value in values if value is not None and value == value]
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], digits: int = 0) -> str:
    """``median (min-max)``, so a reader sees how much the runs agree."""
    clean = [value for value in values if value is not None and value == value]
    if not clean:
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    if len(clean) == 1:
        return fmt.format(clean[0])
    middle, low, high = (fmt.format(value) for value in (median(clean), min(clean), max(clean)))
    return f"{middle} ({low}-{high})"


def row_numbers(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The per-run values one table row summarises."""
    pick = {
        "alone": [run["alone"]["light"]["per_second"] for run in runs],
        "heavy": [run["with_heavy"]["light"]["per_second"] for run in runs],
        "p50_alone": [run["alone"]["light"]["p50_ms"] for run in runs],
        "p90_alone": [run["alone"]["light"]["p90_ms"] for run in runs],
        "p50_heavy": [run["with_heavy"]["light"]["p50_ms"] for run in runs],
        "p90_heavy": [run["with_heavy"]["light"]["p90_ms"] for run in runs],
        "lag_p90": [run["with_heavy"]["lag"]["p90_ms"] for run in runs],
        "lag_mean": [run["with_heavy"]["lag"]["mean_ms"] for run in runs],
        "heavy_per_s": [run["with_heavy"]["heavy"]["per_second"] for run in runs],
        "probe_failed": [run["with_heavy"]["probes"]["failed"] for run in runs],
        "probes": [run["with_heavy"]["probes"]["sent"] for run in runs],
        "errors": [
            run[phase]["light"]["errors"] + (run[phase]["heavy"]["failed"] or 0)
            for run in runs
            for phase in ("alone", "with_heavy")
        ],
        # CPU seconds per second (results saved before CPU was measured have none)
        "server_cpu_alone": [_cpu(run["alone"], "server") for run in runs],
        "server_cpu_heavy": [_cpu(run["with_heavy"], "server") for run in runs],
        "workers_cpu_heavy": [_cpu(run["with_heavy"], "children") for run in runs],
        "busy_alone": [_cpu(run["alone"], "machine") for run in runs],
        "busy_heavy": [_cpu(run["with_heavy"], "machine") for run in runs],
    }
    pick["ratio"] = [h / a for a, h in zip(pick["alone"], pick["heavy"], strict=True) if a]
    pick["us_per_light"] = [
        cpu / rate * 1e6 for cpu, rate in zip(pick["server_cpu_alone"], pick["alone"], strict=True)
    ]
    return pick


def _cpu(phase: dict[str, Any], part: str) -> float:
    return float(phase.get("cpu", {}).get(part, float("nan")))


def _cpus(values: list[float]) -> str:
    """The median CPUs busy, or n/a (results saved before CPU was measured)."""
    middle = median(values)
    return "n/a" if middle != middle else f"{middle:.2f}"


def table(rows: list[Row], runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| | light/s alone | light/s with heavy | ratio | p50 / p90 ms alone | "
        "p50 / p90 ms with heavy | loop lag p90 / mean ms | heavy/s | probes failed | errors "
        "| server CPU µs per light request alone | CPUs busy alone / with heavy "
        "| with heavy: server / workers CPUs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n = row_numbers(runs[row.label])
        lag = (
            "n/a (no event loop)"
            if row.bare == "grpc-sync" or (row.transport == "grpc" and not row.bare)
            else f"{median(n['lag_p90']):.1f} / {median(n['lag_mean']):.1f}"
        )
        lines.append(
            f"| {row.label} | {spread(n['alone'])} | {spread(n['heavy'])} "
            f"| {spread(n['ratio'], 2)} "
            f"| {median(n['p50_alone']):.1f} / {median(n['p90_alone']):.1f} "
            f"| {median(n['p50_heavy']):.1f} / {median(n['p90_heavy']):.1f} "
            f"| {lag} | {spread(n['heavy_per_s'], 2)} "
            f"| {sum(n['probe_failed']):.0f} of {sum(n['probes']):.0f} | {sum(n['errors']):.0f} "
            f"| {spread(n['us_per_light'])} "
            f"| {_cpus(n['busy_alone'])} / {_cpus(n['busy_heavy'])} "
            f"| {_cpus(n['server_cpu_heavy'])} / {_cpus(n['workers_cpu_heavy'])} |"
        )
    return "\n".join(lines)


def describe_machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"{platform.system()} {platform.release()}, load average {load:.1f} at start, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )


if __name__ == "__main__":
    sys.exit(main())
