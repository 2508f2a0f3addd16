"""The offload pool's alert rules fire on a wedged pool and stay quiet on normal load.

The evidence is the real service's own metrics: a generated project's test service
(``tests/runtime/offload_service.py serve``) is driven into each state and scraped once a second.
The recorded series go to ``promtool test rules`` with the rendered
``deploy/prometheus/offload-rules.yaml``; each series is continued past the recording the way
the state continues (counters and the oldest call's age at their recorded rate, other gauges at
their last value), so the rules' ``for:`` durations can elapse.

promtool comes from Debian's ``prometheus`` package (``scripts/debian-tools.sh``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from combinations import REPO, Combination, combinations
from support import run

COMBINATION = next(c for c in combinations() if c["executor"] == "process")
SCRAPES = 6
EXTENDED_STEPS = 1200  # 20 minutes at one sample a second: past every rule's window and for:
SAMPLE = re.compile(r"^(offload_[a-z_]+)(\{[^}]*\})? (\S+)$")
# What Prometheus adds to every series it scrapes.
SCRAPE_LABELS = 'job="offload-service",instance="10.0.0.7:8000"'
TARGET = {"job": "offload-service", "instance": "10.0.0.7:8000"}
GROWING = re.compile(r"(_total|_count|^offload_oldest_running_seconds)$")


def promtool() -> str:
    run([REPO / "scripts" / "debian-tools.sh", "prometheus"], timeout=900)
    return "promtool"


class ScenarioService:
    """``offload_service.py serve`` of a prepared project, on a free loopback port."""

    def __init__(self, project: Path, python: Path, **settings: object) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        prefix = re.search(
            r'ENV_PREFIX = "([^"]+)"', (project / "tests" / "conftest.py").read_text()
        )
        assert prefix is not None
        env = dict(os.environ, PYTHONPATH=str(project / "src"))
        for name, value in {"host": "127.0.0.1", "port": self.port, **settings}.items():
            env[prefix[1] + name.upper()] = str(value)
        self.process = subprocess.Popen(
            [str(python), "tests/runtime/offload_service.py", "serve"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "offload_service_serving" in line:
                break
        else:
            pytest.fail("the test service exited before serving")

    def send(self, op: str) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port))
        connection.sendall(json.dumps({"op": op, "id": f"req-{op}"}).encode() + b"\n")
        return connection

    def call(self, op: str) -> str:
        with self.send(op) as connection:
            return connection.makefile("rb").readline().decode()

    def scrape(self) -> dict[str, float]:
        with self.send("metrics") as connection:
            text = connection.makefile("rb").read().decode()
        samples = {}
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if match and not match[1].endswith(("_created", "_bucket", "_sum")):
                samples[match[1] + (match[2] or "")] = float(match[3])
        return samples


@contextmanager
def running_service(project: Path, python: Path, **settings: object) -> Iterator[ScenarioService]:
    service = ScenarioService(project, python, **settings)
    try:
        yield service
    finally:
        service.process.kill()
        service.process.wait(10)


def record(service: ScenarioService, between_scrapes: Callable[[], None]) -> dict[str, list[float]]:
    """``SCRAPES`` scrapes a second apart; ``between_scrapes`` is the load in between."""
    series: dict[str, list[float]] = {}
    for index in range(SCRAPES):
        started = time.monotonic()
        between_scrapes()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        for name, value in service.scrape().items():
            series.setdefault(name, [0.0] * index).append(value)
    return series


def input_series(recorded: dict[str, list[float]]) -> list[dict[str, str]]:
    """promtool ``input_series``: the recorded values, then the state continued."""
    result = []
    for exposed, values in recorded.items():
        name = exposed.rstrip("}") + ("," if "{" in exposed else "{") + SCRAPE_LABELS + "}"
        step = (
            (values[-1] - values[0]) / (len(values) - 1)
            if GROWING.search(name.split("{")[0])
            else 0
        )
        shown = " ".join(f"{value:g}" for value in values)
        result.append(
            {"series": name, "values": f"{shown} {values[-1]:g}+{step:g}x{EXTENDED_STEPS}"}
        )
    return result


def promtool_test(
    project: Path, tmp_path: Path, recorded: dict[str, list[float]], expected: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    rules = project / "deploy" / "prometheus" / "offload-rules.yaml"
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "1s",
                "input_series": input_series(recorded),
                "alert_rule_test": [
                    {"eval_time": "18m", "alertname": name, "exp_alerts": alerts}
                    for name, alerts in expected.items()
                ],
            }
        ],
    }
    path = tmp_path / "offload-rules-test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return run([promtool(), "test", "rules", path], check=False, timeout=120)


ALERTS = [
    "OffloadPoolWedged",
    "OffloadThreadsAbandoned",
    "OffloadPoolSaturated",
    "OffloadCallsKilledForTime",
]


def test_the_alerts_fire_on_a_pool_wedged_by_abandoned_threads(
    prepared: Callable[[Combination], Path], shared_venv: Path, tmp_path: Path
) -> None:
    project = prepared(COMBINATION)
    settings = {
        "offload_executor": "thread",
        "offload_workers": 2,
        "offload_queue": 0,
        "offload_timeout": 1,
    }
    with running_service(project, shared_venv / "bin" / "python", **settings) as service:
        stuck = [service.send("spin") for _ in range(2)]
        deadline = time.monotonic() + 60
        # Both must be running before their clients give up: a call whose client is gone
        # before it starts is dropped, not abandoned.
        while service.scrape().get('offload_in_flight{executor="thread"}') != 2:
            assert time.monotonic() < deadline, "the two calls did not start within 60 s"
            time.sleep(0.05)
        for connection in stuck:
            connection.close()  # the clients give up: both threads are abandoned
        deadline = time.monotonic() + 30
        while service.scrape().get('offload_abandoned_threads{executor="thread"}') != 2:
            assert time.monotonic() < deadline, "the two calls were not abandoned within 30 s"
            time.sleep(0.05)

        def refused_calls() -> None:
            assert '"rejected"' in service.call("pid")

        recorded = record(service, refused_calls)
    assert recorded['offload_abandoned_threads{executor="thread"}'][-1] == 2
    firing = {**TARGET, "executor": "thread"}
    wedged = (
        "Every thread worker is busy and the oldest call has run for more than twice the run "
        "limit (and at least a minute): new calls are refused until it ends. Its log names the "
        "function and request (offload_call_killed, offload_thread_abandoned)."
    )
    abandoned = (
        "Offloaded calls outlived their callers and cannot be stopped. Give blocking I/O its "
        "own timeouts, or move CPU-bound work to the process executor."
    )
    result = promtool_test(
        project,
        tmp_path,
        recorded,
        {
            "OffloadPoolWedged": [
                {
                    "exp_labels": {**firing, "severity": "critical"},
                    "exp_annotations": {
                        "summary": "Offload pool of 10.0.0.7:8000 is wedged",
                        "description": wedged,
                    },
                }
            ],
            "OffloadThreadsAbandoned": [
                {
                    "exp_labels": {**firing, "severity": "warning"},
                    "exp_annotations": {
                        "summary": "2 offload threads of 10.0.0.7:8000 run on abandoned",
                        "description": abandoned,
                    },
                }
            ],
            "OffloadPoolSaturated": [
                {
                    "exp_labels": {**firing, "severity": "warning"},
                    "exp_annotations": {
                        "summary": "Offload pool of 10.0.0.7:8000 refuses 100% of calls"
                    },
                }
            ],
        },
    )
    assert result.returncode == 0, result.stdout


def test_the_alerts_stay_quiet_on_normal_load(
    prepared: Callable[[Combination], Path], shared_venv: Path, tmp_path: Path
) -> None:
    project = prepared(COMBINATION)
    settings = {"offload_executor": "process", "offload_workers": 2, "offload_queue": 8}
    with running_service(project, shared_venv / "bin" / "python", **settings) as service:

        def ordinary_calls() -> None:
            for _ in range(10):
                assert '"ok"' in service.call("pid")

        recorded = record(service, ordinary_calls)
    assert recorded['offload_duration_seconds_count{executor="process",outcome="ok"}'][-1] >= 50
    result = promtool_test(project, tmp_path, recorded, {name: [] for name in ALERTS})
    assert result.returncode == 0, result.stdout


def test_the_wedged_rule_notices_when_its_condition_is_broken(
    prepared: Callable[[Combination], Path], tmp_path: Path
) -> None:
    """Negative control: promtool must fail a test whose expectation is wrong."""
    project = prepared(COMBINATION)
    idle = {
        'offload_in_flight{executor="process"}': [0.0] * SCRAPES,
        'offload_workers{executor="process"}': [2.0] * SCRAPES,
    }
    result = promtool_test(
        project, tmp_path, idle, {"OffloadPoolWedged": [{"exp_labels": {"severity": "critical"}}]}
    )
    assert result.returncode != 0
    assert "OffloadPoolWedged" in result.stdout
