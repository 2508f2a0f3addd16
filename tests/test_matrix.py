"""Every combination of answers, rendered and checked with the generated project's own tools.

The combinations are the product of copier.yml's choice questions (tests/combinations.py). All of
them run on one shared environment (see conftest.py's ``shared_venv``) with the source tree on
PYTHONPATH; tests/test_lockfile.py proves separately that a project installs from its own lock.
The pytest suite and mypy run once per distinct set of inputs: combinations whose code, tests and
configuration are byte-identical (they differ only in deployment files) share that run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from combinations import Combination, combinations
from hygiene import all_problems
from support import (
    check_inputs_fingerprint,
    own_checks,
    rendered_files,
    run,
    shared_outcome,
    tail,
    tool_env,
)

pytestmark = pytest.mark.matrix

COMBINATIONS = combinations()


def run_own_check(
    name: str, combination: Combination, project: Path, venv: Path, cache: Path, timeout: float
) -> None:
    command = own_checks(venv, cache)[name]
    result = run(
        command, cwd=project, env=tool_env(venv, mypy_cache=cache), timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{name} failed for {combination} (exit {result.returncode}) in {project}:\n"
        f"{tail(result.stdout, 120)}"
    )


def run_shared_check(
    name: str,
    combination: Combination,
    project: Path,
    venv: Path,
    cache: Path,
    timeout: float,
    results: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Like ``run_own_check``, but combinations with identical inputs share one run.

    Combinations that differ only in files the check cannot read (deployment manifests) would
    give the same result; the first one to get here runs the check, the others report its result.
    """
    fingerprint = check_inputs_fingerprint(project)

    def compute() -> dict[str, object]:
        command = own_checks(venv, cache)[name]
        env = tool_env(venv, mypy_cache=cache)
        result = run(command, cwd=project, env=env, timeout=timeout, check=False)
        return {"ran_in": combination.id, "status": result.returncode, "output": result.stdout}

    results.mkdir(parents=True, exist_ok=True)
    outcome = shared_outcome(results / f"{name}-{fingerprint}.json", compute)
    record_property("ran_in", outcome["ran_in"])
    shared = "" if outcome["ran_in"] == combination.id else f" (run in {outcome['ran_in']}, "
    shared += "whose inputs are identical)" if shared else ""
    assert outcome["status"] == 0, (
        f"{name} failed for {combination}{shared} (exit {outcome['status']}) in "
        f"{project.parent / str(outcome['ran_in'])}:\n{tail(str(outcome['output']), 120)}"
    )


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_own_test_suite(
    combination: Combination,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
    session_dir: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """The generated project's pytest suite passes (real servers, real signals)."""
    project = prepared(combination)
    results = session_dir / "results"
    run_shared_check(
        "pytest", combination, project, shared_venv, worker_cache, 900, results, record_property
    )


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_mypy(
    combination: Combination,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
    session_dir: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """``mypy`` with the project's configuration (strict) finds nothing."""
    project = prepared(combination)
    results = session_dir / "results"
    run_shared_check(
        "mypy", combination, project, shared_venv, worker_cache, 600, results, record_property
    )


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_ruff_check(
    combination: Combination,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
) -> None:
    run_own_check("ruff check", combination, prepared(combination), shared_venv, worker_cache, 120)


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_ruff_format(
    combination: Combination,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
) -> None:
    """The code is formatted as shipped: ``ruff format --check`` would change nothing."""
    run_own_check("ruff format", combination, prepared(combination), shared_venv, worker_cache, 120)


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_rendering_hygiene(
    combination: Combination, rendered: Callable[[Combination], Path], shared_venv: Path
) -> None:
    """No template leftovers, empty files, stray blank lines, misplaced files or broken syntax."""
    project = rendered(combination)
    problems = all_problems(
        combination, project, rendered_files(project), shared_venv / "bin" / "python"
    )
    assert not problems, f"{len(problems)} problems in {combination}:\n" + "\n".join(problems)


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_answers_are_recorded(
    combination: Combination, rendered: Callable[[Combination], Path]
) -> None:
    """``copier update`` replays the answers file: it must hold what was asked."""
    answers = yaml.safe_load((rendered(combination) / ".copier-answers.yml").read_text())
    assert {name: answers.get(name) for name in combination.data} == combination.data
    assert answers["_src_path"], "the answers file does not say where the template came from"


def test_the_deployments_of_a_transport_and_executor_share_one_suite_run(
    rendered: Callable[[Combination], Path],
) -> None:
    """The suites run once per transport and executor: a deployment that splits the inputs (a
    test reading a manifest, or only naming one) doubles the matrix's longest checks."""
    groups: dict[tuple[str, ...], set[str]] = {}
    for combination in COMBINATIONS:
        siblings = tuple(value for name, value in combination.answers if name != "deployment")
        groups.setdefault(siblings, set()).add(check_inputs_fingerprint(rendered(combination)))
    split = {"-".join(key): len(prints) for key, prints in groups.items() if len(prints) > 1}
    assert not split, f"suite runs per transport and executor, where more than one: {split}"
