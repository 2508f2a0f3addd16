"""Every combination of answers, rendered and checked with the generated project's own tools.

The combinations are the product of copier.yml's choice questions (tests/combinations.py). All of
them run on one shared environment (see conftest.py's ``shared_venv``) with the source tree on
PYTHONPATH; tests/test_lockfile.py proves separately that a project installs from its own lock.
The pytest suite and mypy run once per distinct set of inputs: combinations whose code, tests and
configuration are byte-identical (they differ only in deployment files) share that run.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from combinations import Combination, choice_values, combinations, covering_set, default
from hygiene import all_problems, python_problems
from support import (
    RUNTIME_TESTS,
    SERVICE_STALL_TEST_HELPERS,
    SERVICE_STALL_TESTS,
    check_inputs_fingerprint,
    find_python,
    fingerprint_of,
    own_checks,
    rendered_files,
    run,
    runtime_test_inputs,
    runtime_tests_fingerprint,
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


SharedCheck = Callable[[str, Combination, list[str], Callable[[Path], str], float], str]


@pytest.fixture
def shared_check(
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
    session_dir: Path,
    record_property: Callable[[str, object], None],
) -> SharedCheck:
    """``shared_check(name, combination, command, inputs, timeout)`` runs ``command`` in the
    combination's project, once for all combinations whose ``inputs(project)`` are the same,
    and returns its output.

    Combinations that differ only in files the check cannot read (deployment manifests) would
    give the same result; the first one to get here runs the check, the others report its result.
    """

    def check(
        name: str,
        combination: Combination,
        command: list[str],
        inputs: Callable[[Path], str],
        timeout: float,
    ) -> str:
        project = prepared(combination)

        def compute() -> dict[str, object]:
            env = tool_env(shared_venv, mypy_cache=worker_cache)
            result = run(command, cwd=project, env=env, timeout=timeout, check=False)
            return {"ran_in": combination.id, "status": result.returncode, "output": result.stdout}

        results = session_dir / "results"
        results.mkdir(parents=True, exist_ok=True)
        outcome = shared_outcome(results / f"{name}-{inputs(project)}.json", compute)
        record_property("ran_in", outcome["ran_in"])
        shared = "" if outcome["ran_in"] == combination.id else f" (run in {outcome['ran_in']}, "
        shared += "whose inputs are identical)" if shared else ""
        assert outcome["status"] == 0, (
            f"{name} failed for {combination}{shared} (exit {outcome['status']}) in "
            f"{project.parent / str(outcome['ran_in'])}:\n{tail(str(outcome['output']), 120)}"
        )
        return str(outcome["output"])

    return check


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_own_test_suite(
    combination: Combination, shared_check: SharedCheck, shared_venv: Path, worker_cache: Path
) -> None:
    """The generated project's pytest suite passes (real servers, real signals), but for the
    runtime's own tests: test_runtime_tests runs those. The service's stall tests run with one
    executor per transport (see :func:`runs_the_service_stall_tests`)."""
    pytest_command = own_checks(shared_venv, worker_cache)["pytest"]
    # Relative: pytest makes it absolute from the project's directory.
    command = [*pytest_command, f"--ignore-glob={RUNTIME_TESTS}"]
    stall_tests = runs_the_service_stall_tests(combination)
    if not stall_tests:
        command.append(f"--ignore={SERVICE_STALL_TESTS}")
    output = shared_check("pytest", combination, command, check_inputs_fingerprint, 900)
    assert "tests/runtime/test_runtime_" not in output, "the runtime's tests ran here too"
    assert (f"{SERVICE_STALL_TESTS}::" in output) == stall_tests


def runs_the_service_stall_tests(combination: Combination) -> bool:
    """Whether the combination's suite runs the service's stall tests: only with the default
    executor. They stall the event loop or a handler thread, which the executor (where
    ``offload()`` runs work) does not touch, and they take a minute or two per run.
    :func:`test_the_service_stall_tests_are_the_same_for_every_executor` keeps it so.
    """
    return combination["executor"] == default("executor")


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_runtime_tests(
    combination: Combination,
    shared_check: SharedCheck,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
) -> None:
    """The runtime's own tests pass; they run once per distinct runtime (one per executor: the
    executor answer is the runtime's only difference between combinations)."""
    project = prepared(combination)
    tests = sorted(str(path.relative_to(project)) for path in project.glob(RUNTIME_TESTS))
    assert tests, f"no tests match {RUNTIME_TESTS}"
    command = [*own_checks(shared_venv, worker_cache)["pytest"], *tests]
    shared_check("pytest-runtime", combination, command, runtime_tests_fingerprint, 900)


@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_mypy(
    combination: Combination, shared_check: SharedCheck, shared_venv: Path, worker_cache: Path
) -> None:
    """``mypy`` with the project's configuration (strict) finds nothing."""
    command = own_checks(shared_venv, worker_cache)["mypy"]
    shared_check("mypy", combination, command, check_inputs_fingerprint, 600)


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


@pytest.mark.parametrize("combination", covering_set(), ids=str)
def test_the_code_compiles_on_the_oldest_offered_python(
    combination: Combination, rendered: Callable[[Combination], Path]
) -> None:
    """The matrix renders the default Python version; the same code must also compile on the
    oldest one offered (no syntax newer than it), or projects made for it die at import."""
    oldest = min(choice_values("python_version"), key=lambda v: tuple(map(int, v.split("."))))
    python = find_python(oldest)
    assert python, f"Python {oldest} is not installed: scripts/test finds it through pyenv or PATH"
    project = rendered(combination)
    problems = python_problems(project, rendered_files(project), python)
    assert not problems, f"{len(problems)} problems on Python {oldest}:\n" + "\n".join(problems)


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


def test_the_runtime_tests_run_once_per_executor(rendered: Callable[[Combination], Path]) -> None:
    """The runtime is the same for every transport: only the executor answer changes it. A
    transport-specific line in it, or in its tests, would run them once per transport."""
    groups: dict[str, set[str]] = {}
    for combination in COMBINATIONS:
        fingerprint = runtime_tests_fingerprint(rendered(combination))
        groups.setdefault(combination["executor"], set()).add(fingerprint)
    split = {executor: len(prints) for executor, prints in groups.items() if len(prints) > 1}
    assert not split, f"runtime test runs per executor, where more than one: {split}"


def test_the_service_stall_tests_are_the_same_for_every_executor(
    rendered: Callable[[Combination], Path],
) -> None:
    """The service's stall tests run with one executor per transport (test_own_test_suite): a
    line of them, or of their helpers, that changed with the executor would go untested."""
    groups: dict[str, set[str]] = {}
    for combination in COMBINATIONS:
        project = rendered(combination)
        files = [Path(SERVICE_STALL_TESTS), *map(Path, SERVICE_STALL_TEST_HELPERS)]
        inputs = [file for file in files if (project / file).exists()]
        assert Path(SERVICE_STALL_TESTS) in inputs, f"{combination} has no {SERVICE_STALL_TESTS}"
        groups.setdefault(combination["transport"], set()).add(fingerprint_of(project, inputs))
    split = {transport: len(prints) for transport, prints in groups.items() if len(prints) > 1}
    assert not split, f"service stall tests that differ by executor, per transport: {split}"


@pytest.mark.parametrize("combination", covering_set(), ids=str)
def test_the_runtime_tests_read_only_what_their_fingerprint_covers(
    combination: Combination, rendered: Callable[[Combination], Path]
) -> None:
    """The runtime tests' shared run is sound only if they and the runtime read nothing else: no
    transport module, no other test helper (imported, or run by name or file name)."""
    project = rendered(combination)
    package = answers_package(project)
    inputs = set(runtime_test_inputs(project))
    helpers = {
        file: (file.stem, file.name, ".".join(file.relative_to("tests").with_suffix("").parts))
        for file in rendered_files(project)
        if file.parts[0] == "tests" and file.suffix == ".py"
    }
    problems = []
    for file in sorted(inputs):
        if file.suffix != ".py":
            continue
        for line, name in names_read(project / file, file, package):
            helper = any(name in names and other not in inputs for other, names in helpers.items())
            transport = name.split(".")[0] == package and not (
                name == package or name.startswith(f"{package}.runtime")
            )
            if helper or transport:
                problems.append(f"{file}:{line} reads {name}")
    assert not problems, "outside the runtime tests' inputs:\n" + "\n".join(problems)


def answers_package(project: Path) -> str:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return str(answers["package_name"])


# conftest.py's ways of running the whole service (python -m <package>), not just its runtime.
RUNS_THE_SERVICE = {"PACKAGE", "start_service"}


def names_read(path: Path, file: Path, package: str) -> Iterator[tuple[int, str]]:
    """The modules ``path`` imports (relative imports made absolute), its string constants (a
    module run with ``-m`` or a file opened by name), and ``<package>.__main__`` where it runs
    the whole service with conftest.py's help."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "arg", None)
        if name in RUNS_THE_SERVICE and file.parts[0] == "tests" and file.name != "conftest.py":
            yield node.lineno, f"{package}.__main__"  # type: ignore[attr-defined]
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = file.parent.parts[1 : len(file.parent.parts) - node.level + 1]
                module = ".".join(filter(None, [*base, module]))
            yield node.lineno, module
            if module == package:  # from <package> import runtime
                yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
