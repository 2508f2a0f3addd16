"""The GitHub workflow for forks is valid and runs the same matrix as scripts/test."""

from __future__ import annotations

import json
import shutil
import sys

import yaml
from combinations import REPO, choice_values, combinations
from support import run

WORKFLOW = REPO / ".github" / "workflows" / "template.yml"
SCRIPTS = [
    "scripts/bootstrap.sh",
    "scripts/test",
    "scripts/demo",
    "scripts/container-runtime.sh",
    ".ci/run",
]


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not on PATH: run the tests with scripts/test"
    return found


def test_actionlint_accepts_the_workflows() -> None:
    """actionlint checks syntax, expressions, action inputs and (with shellcheck) run: scripts."""
    tool("shellcheck")
    result = run([tool("actionlint"), "-no-color", WORKFLOW], cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    result = run([tool("shellcheck"), "-x", *SCRIPTS], cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout


def test_the_workflow_builds_its_matrix_from_copier_yml() -> None:
    """One job per combination, listed by the same code the tests use."""
    listed = run([sys.executable, "tests/combinations.py"], cwd=REPO).stdout
    assert json.loads(listed) == [combination.id for combination in combinations()]

    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    jobs = workflow["jobs"]
    assert "python tests/combinations.py" in jobs["combinations"]["steps"][-1]["run"]
    matrix = jobs["combination"]["strategy"]["matrix"]["combination"]
    assert matrix == "${{ fromJSON(needs.combinations.outputs.ids) }}"
    assert jobs["combination"]["strategy"]["fail-fast"] is False
    commands = [step.get("run", "") for job in jobs.values() for step in job["steps"]]
    assert './scripts/test --combination "$COMBINATION"' in commands
    assert './scripts/test -m "not matrix"' in commands


def test_other_checks_job_installs_every_offered_python() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["other-checks"]["steps"]
    setup = next(
        step for step in steps if str(step.get("uses", "")).startswith("actions/setup-python")
    )
    installed = str(setup["with"]["python-version"]).split()
    assert sorted(installed) == sorted(choice_values("python_version"))
