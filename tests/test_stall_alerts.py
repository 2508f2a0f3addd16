"""The shipped stall alert rules, tested with ``promtool test rules`` on recorded metrics.

The series come from the generated runtime itself: its stall watchdog and metrics server, under
an I/O-bound load (requests awaiting I/O, sync handlers waiting on a slow database) and under a
CPU-bound culprit (a request computing on the event loop, a handler computing on its thread),
scraped over HTTP after each round. The rounds become one-minute steps for promtool. The rules
must stay silent for the first and fire for the second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from combinations import Combination, combinations, default
from support import REPO, run, tool_env

RULES = REPO / "template" / "deploy" / "prometheus" / "stall-rules.yaml"
TARGET = {"job": "my-service", "instance": "10.0.0.7:8000"}
EVAL_TIME = "7m"  # the last of the eight recorded rounds


@pytest.fixture(scope="session")
def promtool() -> str:
    result = run(["bash", REPO / "scripts" / "debian-tools.sh", "prometheus"], check=False)
    assert result.returncode == 0, (
        f"promtool is needed and could not be installed:\n{result.stdout}"
    )
    return "promtool"


def default_combination() -> Combination:
    wanted = {name: default(name) for name in combinations()[0].data}
    return next(c for c in combinations() if c.data == wanted)


def record(
    project: Path, venv: Path, cache: Path, load: str, output: Path
) -> list[dict[str, float]]:
    command = [venv / "bin" / "python", "tests/runtime_scenarios.py", "record", load, output]
    env = tool_env(venv, mypy_cache=cache)
    env["PYTHONPATH"] = "src:tests"
    run(command, cwd=project, env=env, timeout=300)
    scrapes: list[dict[str, float]] = json.loads(output.read_text(encoding="utf-8"))
    return scrapes


def input_series(scrapes: list[dict[str, float]]) -> list[dict[str, str]]:
    """promtool's input series: one value per scrape (``_`` where a series did not exist yet)."""
    names = sorted({series for scrape in scrapes for series in scrape})
    found = []
    for series in names:
        name, _, labels = series.partition("{")
        target = ",".join(f'{key}="{value}"' for key, value in TARGET.items())
        labels = f"{{{target},{labels}" if labels else f"{{{target}}}"
        values = " ".join(repr(scrape[series]) if series in scrape else "_" for scrape in scrapes)
        found.append({"series": f"{name}{labels}", "values": values})
    return found


def annotations(alert: str) -> dict[str, str]:
    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                return dict(rule.get("annotations", {}))
    raise AssertionError(f"{RULES} has no alert {alert}")


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def firing(alert: str, **labels: str) -> dict[str, object]:
    return {
        "exp_labels": {**TARGET, **labels, "severity": "warning"},
        "exp_annotations": annotations(alert),
    }


def test_rules_are_valid(promtool: str) -> None:
    run([promtool, "check", "rules", RULES])


def test_alerts_stay_silent_for_io_and_fire_for_a_cpu_bound_culprit(
    promtool: str,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
    tmp_path: Path,
) -> None:
    project = prepared(default_combination())
    io = record(project, shared_venv, worker_cache, "io", tmp_path / "io.json")
    cpu = record(project, shared_venv, worker_cache, "cpu", tmp_path / "cpu.json")
    assert any(scrape.get("slow_handlers_total") for scrape in io), (
        "the I/O load had no slow handlers"
    )

    silent = [
        {"eval_time": EVAL_TIME, "alertname": name, "exp_alerts": []} for name in alert_names()
    ]
    cpu_bound = [
        {
            "eval_time": EVAL_TIME,
            "alertname": "CodeStallsRequests",
            "exp_alerts": [
                firing("CodeStallsRequests", kind="event_loop", cause="python"),
                firing("CodeStallsRequests", kind="handler", cause="python"),
            ],
        },
        {"eval_time": EVAL_TIME, "alertname": "ProcessPausedOften", "exp_alerts": []},
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": input_series(io), "alert_rule_test": silent},
            {"interval": "1m", "input_series": input_series(cpu), "alert_rule_test": cpu_bound},
        ],
    }
    test_file = tmp_path / "stall-rules.test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = run([promtool, "test", "rules", test_file], check=False)
    assert result.returncode == 0, f"{result.stdout}\nseries (cpu): {json.dumps(cpu[-1], indent=1)}"


def test_the_prometheus_rule_carries_the_same_groups(
    promtool: str, rendered: Callable[[Combination], Path], tmp_path: Path
) -> None:
    """deploy/kubernetes/prometheus-rule.yaml: the rule files' groups, valid for promtool."""
    kubernetes = next(c for c in combinations() if c["deployment"] == "kubernetes")
    project = rendered(kubernetes)
    document = yaml.safe_load(
        (project / "deploy" / "kubernetes" / "prometheus-rule.yaml").read_text(encoding="utf-8")
    )
    assert (document["apiVersion"], document["kind"]) == (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
    )
    shipped = [
        group
        for path in sorted((project / "deploy" / "prometheus").glob("*-rules.yaml"))
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    ]
    assert sorted(document["spec"]["groups"], key=str) == sorted(shipped, key=str)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(document["spec"]), encoding="utf-8")
    run([promtool, "check", "rules", spec])
