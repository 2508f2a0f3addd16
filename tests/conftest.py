"""Fixtures for the template's tests: the template snapshot, rendered combinations, environments.

Run through ``scripts/test`` (it installs the tools and puts uv on PATH). ``--combination ID``
runs only the matrix tests of one combination (what each job of the GitHub workflow does).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from combinations import Combination, combinations, covering_set
from support import (
    CACHE,
    environment_for,
    once,
    record_rendered_files,
    render,
    run,
    shared_python_version,
    snapshot_template,
    union_of_requirements,
)

# The long tests first, so that two workers finish together instead of one waiting on a late
# long test. Suites that probably share a run (see test_matrix.py) go last, when it has happened.
LONG = [
    "test_own_test_suite",
    "test_installs_from_own_lock_file",
    "test_runtime_tests",
    "test_update_from_release_equals_fresh_generation",
    "test_mypy",
]
# The checks that combinations share (test_matrix.py's shared_check), and the answers their
# inputs depend on: the suite and mypy read the code of a transport and an executor; the
# runtime's tests read only the runtime, which differs by executor alone.
SHARED_RUNS = {
    "test_own_test_suite": ("transport", "executor"),
    "test_mypy": ("transport", "executor"),
    "test_runtime_tests": ("executor",),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--combination",
        metavar="ID",
        help="run only the matrix tests of this combination, e.g. fastapi-process-kubernetes",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix: a check of one rendered combination")
    wanted = config.getoption("--combination")
    if wanted and wanted not in {combination.id for combination in combinations()}:
        ids = ", ".join(combination.id for combination in combinations())
        raise pytest.UsageError(f"--combination {wanted!r} is not one of: {ids}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def combination_of(item: pytest.Item) -> Combination | None:
        callspec = getattr(item, "callspec", None)
        found = callspec.params.get("combination") if callspec else None
        return found if isinstance(found, Combination) else None

    wanted = config.getoption("--combination")
    if wanted:
        keep = [
            item
            for item in items
            if item.get_closest_marker("matrix")
            and (combination := combination_of(item)) is not None
            and combination.id == wanted
        ]

        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep

    def shared_run(item: pytest.Item) -> str | None:
        """The run this item shares with others: the check and the answers it depends on."""
        name = getattr(item, "originalname", item.name)
        combination = combination_of(item)
        if combination is None or name not in SHARED_RUNS:
            return None
        return "-".join([name, *(combination[answer] for answer in SHARED_RUNS[name])])

    runs_seen: set[str] = set()
    readers: set[str] = set()  # items whose run an earlier item makes: they read its outcome
    for item in items:
        run = shared_run(item)
        if run is None:
            continue
        # One worker takes every item of a shared run (with --dist loadgroup), so the ones
        # after the first read its outcome instead of waiting for another worker's.
        item.add_marker(pytest.mark.xdist_group(name=run))
        if run in runs_seen:
            readers.add(item.nodeid)
        runs_seen.add(run)

    def rank(item: pytest.Item) -> tuple[int, int, tuple[int, ...]]:
        name = getattr(item, "originalname", item.name)
        combination = combination_of(item)
        spread = tuple(reversed(combination.indices())) if combination else ()
        if item.nodeid in readers:
            return (2, LONG.index(name), spread)
        return (0, LONG.index(name), spread) if name in LONG else (1, 0, spread)

    items.sort(key=rank)


# --- Timing: the matrix's wall time, printed at the end and kept in build/ ----------------------

_reports: list[pytest.TestReport] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "matrix" in report.keywords:
        _reports.append(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _reports:
        return
    started = min(report.start for report in _reports)
    wall = max(report.stop for report in _reports) - started
    per_combination: dict[str, float] = {}
    for report in _reports:
        combination = report.nodeid.split("@")[0].rsplit("[", 1)[-1].rstrip("]")
        per_combination[combination] = per_combination.get(combination, 0.0) + report.duration
    runs: dict[str, list[str]] = {}
    for report in _reports:
        ran_in = dict(report.user_properties).get("ran_in")
        if "test_own_test_suite" in report.nodeid and ran_in:
            combination = report.nodeid.split("@")[0].rsplit("[", 1)[-1].rstrip("]")
            runs.setdefault(str(ran_in), []).append(combination)
    terminalreporter.write_sep("-", "matrix timing")
    for combination, seconds in sorted(per_combination.items()):
        terminalreporter.write_line(f"{combination:40} {seconds:7.1f} s of checks")
    for ran_in, sharing in sorted(runs.items()):
        others = sorted(set(sharing) - {ran_in})
        if others:
            terminalreporter.write_line(f"suite of {ran_in} also stands for {', '.join(others)}")
    terminalreporter.write_line(
        f"matrix wall time: {wall:.1f} s for {len(per_combination)} combinations "
        f"({len(_reports)} checks)"
    )
    record = CACHE.parent / "test-report" / "matrix-timing.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "wall_seconds": round(wall, 1),
                "checks": len(_reports),
                "seconds_per_combination": {k: round(v, 1) for k, v in per_combination.items()},
                "suite_runs": {ran_in: sorted(sharing) for ran_in, sharing in runs.items()},
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


# --- Shared, built-once fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temporary directory of everything the tests start: a generated service a test
    kills leaves its stall dump file there, not in the machine's /tmp."""
    path = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(path))
        yield path


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One directory for the whole session, shared by all xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def worker_cache(worker_id: str) -> Path:
    """A cache directory of this worker's own (mypy's cache is not safe to share)."""
    path = CACHE / "mypy" / worker_id
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def template(session_dir: Path) -> Path:
    """A git repository holding the template as it is in the working tree right now."""
    path = session_dir / "template"
    once(session_dir / "template.done", lambda: snapshot_template(path))
    return path


@pytest.fixture(scope="session")
def matrix_python() -> str:
    return shared_python_version()


@pytest.fixture(scope="session")
def rendered(
    template: Path, session_dir: Path, matrix_python: str
) -> Callable[[Combination], Path]:
    """Render a combination (tasks skipped) once per session; returns the project directory.

    The list of rendered files is kept next to it, before any tool adds files.
    """

    def get(combination: Combination) -> Path:
        project = session_dir / "matrix" / combination.id

        def build() -> None:
            render(template, project, {**combination.data, "python_version": matrix_python})
            record_rendered_files(project)

        once(session_dir / "matrix" / f"{combination.id}.rendered", build)
        return project

    return get


@pytest.fixture(scope="session")
def shared_venv(rendered: Callable[[Combination], Path], matrix_python: str) -> Path:
    """One environment for the whole matrix: every transport's dependencies and dev groups.

    The requirements come from rendered pyproject.toml files (a few combinations that use every
    answer at least once), never from a second list kept by hand.
    """
    from support import find_python

    python = find_python(matrix_python)
    assert python, f"Python {matrix_python} disappeared"
    pyprojects = [rendered(combination) / "pyproject.toml" for combination in covering_set()]
    return environment_for(union_of_requirements(pyprojects), python)


@pytest.fixture(scope="session")
def prepared(
    rendered: Callable[[Combination], Path], shared_venv: Path, session_dir: Path
) -> Callable[[Combination], Path]:
    """A rendered combination whose post-generation steps ran with the shared environment.

    The hook is skipped in the matrix (it would lock and install per project); its one step that
    changes the code, gRPC stub generation, is run here instead.
    """

    def get(combination: Combination) -> Path:
        project = rendered(combination)

        def build() -> None:
            if (project / "scripts" / "protos.py").exists():
                run([shared_venv / "bin" / "python", "scripts/protos.py"], cwd=project)

        once(session_dir / "matrix" / f"{combination.id}.prepared", build)
        return project

    return get
