"""Does the offload pool keep doing useful work when offered more than it can do?

For each executor, the pool's capacity is measured first (calls per second with every worker
kept busy by a closed loop of callers), then calls arrive in an open loop at 1.5x, 2x and 4x that
rate, as independent clients do, each with a deadline of fifty times its work (20 ms of CPU for
processes, 20 ms of blocking sleep for threads). Per level the table shows the median over the
repetitions of:

* offered: calls per second that arrived;
* goodput: calls per second completed within their deadline, and as a share of the capacity;
* rejected: calls refused at once (``OffloadRejected``), timeouts (``OffloadTimeout``), and
  respawns (worker processes killed because a call ran out of time).

The driver is the generated project's own test service
(``tests/runtime/offload_service.py overload``), the same code the overload test runs briefly.
Run it with a generated project::

    copier copy --trust --defaults . /tmp/svc && (cd /tmp/svc && uv sync)
    python benchmarks/offload_overload.py /tmp/svc
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

from service import answer

LEVELS = ["1.5", "2", "4"]
COLUMNS = ["offered", "goodput", "rejected", "timeouts", "respawns"]


def run_once(project: Path, executor: str, seconds: float, nice: int) -> list[dict[str, float]]:
    package = answer(project, "package_name")
    env = dict(os.environ)
    env.update(
        {
            f"{package.upper()}_OFFLOAD_EXECUTOR": executor,
            f"{package.upper()}_OFFLOAD_WORKER_NICE": str(nice),
            f"{package.upper()}_LOG_LEVEL": "error",
            "OVERLOAD_SECONDS": str(seconds),
            "PYTHONPATH": str(project / "src"),
        }
    )
    result = subprocess.run(
        [
            str(project / ".venv" / "bin" / "python"),
            "tests/runtime/offload_service.py",
            "overload",
            *LEVELS,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if '"load_factor"' in line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a generated service (uv sync done)")
    parser.add_argument("--seconds", type=float, default=5.0, help="offered-load window per level")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median shown)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="worker niceness (the service default is 5; on a machine shared with other "
        "work at niceness 0, niced workers measure the neighbours rather than the pool)",
    )
    args = parser.parse_args()
    print(
        f"offload pool under overload: {args.seconds:g} s per level, median of {args.repeat} "
        f"runs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"worker niceness {args.nice}"
    )
    print()
    print(
        "| executor | load | capacity/s | offered/s | goodput/s | goodput % | rejected "
        "| timeouts | respawns |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for executor in ("process", "thread"):
        runs = [
            run_once(args.project, executor, args.seconds, args.nice) for _ in range(args.repeat)
        ]
        for index, level in enumerate(LEVELS):
            rows = [run[index] for run in runs]
            median = {
                key: statistics.median(row[key] for row in rows) for key in ["capacity", *COLUMNS]
            }
            share = statistics.median(row["goodput"] / row["capacity"] for row in rows)
            print(
                f"| {executor} | {level}x | {median['capacity']:.0f} | {median['offered']:.0f} "
                f"| {median['goodput']:.0f} | {100 * share:.0f} % | {median['rejected']:.0f} "
                f"| {median['timeouts']:.0f} | {median['respawns']:.0f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
