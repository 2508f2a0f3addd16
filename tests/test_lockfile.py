"""A project installs from its own lock file into a clean environment, on each Python on offer.

The matrix shares one environment on the default Python; here each other version of
``python_version`` that is installed on the machine gets one complete combination, generated the
way a user generates it (with the post-generation hook: ``uv lock``, stubs, first commit) and
installed with ``uv sync --locked`` into a new virtual environment, then checked with ruff, mypy
and the part of its test suite that depends on the Python version.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from combinations import choice_values, covering_set, default
from support import GIT_IDENTITY, find_python, git, own_checks, render, run, tail, tool_env, uv

VERSIONS = choice_values("python_version")
OTHER_VERSIONS = [version for version in VERSIONS if version != default("python_version")]
VERSION_SENSITIVE_TESTS = (
    "tests/runtime/test_runtime_*.py",
    "tests/runtime/test_service_stalls.py",
    "tests/test_*_api.py",
)


@pytest.mark.parametrize("python_version", OTHER_VERSIONS)
def test_installs_from_own_lock_file(
    python_version: str,
    template: Path,
    tmp_path: Path,
    worker_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    python = find_python(python_version)
    if python is None:
        pytest.skip(f"Python {python_version} is not installed on this machine")
    # Spread the versions over different transports and executors.
    combinations = covering_set()
    combination = combinations[VERSIONS.index(python_version) % len(combinations)]
    project = tmp_path / combination.id
    for name, value in GIT_IDENTITY.items():
        monkeypatch.setenv(name, value)

    render(
        template, project, {**combination.data, "python_version": python_version}, skip_tasks=False
    )

    assert (project / "uv.lock").is_file(), "the post-generation hook wrote no uv.lock"
    assert git("rev-list", "--count", "HEAD", cwd=project).strip() == "1"
    assert git("status", "--porcelain", cwd=project) == "", "the first commit left files out"

    venv = tmp_path / "clean-venv"
    run(
        [uv(), "sync", "--locked", "--python", python],
        cwd=project,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
    )
    reported = run([venv / "bin" / "python", "-c", "import sys; print(sys.version)"]).stdout
    assert reported.startswith(python_version + "."), reported

    cache = worker_cache / f"py{python_version}"
    env = tool_env(venv, mypy_cache=cache, pythonpath=None)
    checks = own_checks(venv, cache)
    # The matrix runs the whole suite on the default Python. Here: what depends on the Python
    # version (the runtime's use of asyncio, threads, processes, signals, faulthandler; how a
    # stall report finds the blocked task's request, which differs on 3.11) and the service's
    # API end to end; mypy checks the rest against this version's standard library.
    tests = [path for pattern in VERSION_SENSITIVE_TESTS for path in sorted(project.glob(pattern))]
    assert tests, f"no tests match {VERSION_SENSITIVE_TESTS}"
    checks["pytest"] += [str(path.relative_to(project)) for path in tests]
    failures = []
    for name, command in checks.items():
        result = run(command, cwd=project, env=env, timeout=600, check=False)
        if result.returncode != 0:
            failures.append(f"--- {name} (exit {result.returncode})\n{tail(result.stdout, 60)}")
    assert not failures, f"{combination} on Python {python_version}:\n" + "\n".join(failures)
