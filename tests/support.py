"""Helpers for the template's tests: rendering, the shared environment, running tools.

Several pytest-xdist workers share one session directory. Anything that is built once (the
template snapshot, a rendered combination, the dependency environment) is built under an
``fcntl`` lock by whichever worker asks first; the others wait and reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from combinations import REPO, choice_values, default

CACHE = REPO / "build" / "test-cache"

# Every git command the tests run, and the post-generation hook's first commit, get an identity:
# a fresh CI machine has none configured.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "template-tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "template-tests@example.com",
}
# Directories the tools make inside a project; they are not part of what copier rendered.
TOOL_DIRS = frozenset(
    {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__"}
)


class CommandFailed(AssertionError):
    """A command exited non-zero; the message holds the command and the end of its output."""


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with stdout and stderr merged; raise CommandFailed on failure if ``check``.

    The command gets its own process group, so that at the deadline the whole group is killed,
    including servers a hung test suite started; the output then ends with a "[killed: ...]" line.
    """
    args = [str(part) for part in command]
    with spawn(args, cwd=cwd, env=env) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            output += f"\n[killed: did not finish within {timeout} s]\n"
    result = subprocess.CompletedProcess(args, process.returncode, output, None)
    if check and result.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(args)}` exited {result.returncode} in {cwd}:\n{tail(result.stdout)}"
        )
    return result


def spawn(
    command: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start a command in a process group of its own, stdout and stderr merged into one pipe."""
    return subprocess.Popen(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def git_env() -> dict[str, str]:
    return {**os.environ, **GIT_IDENTITY}


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd=cwd, env=git_env()).stdout


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def once(marker: Path, build: Callable[[], None]) -> None:
    """Run ``build`` once across all workers; a failure is remembered and re-raised for all."""
    with locked(marker.with_name(marker.name + ".lock")):
        if marker.exists():
            outcome = marker.read_text(encoding="utf-8")
            if outcome != "ok":
                raise CommandFailed(f"(failed earlier in this session)\n{outcome}")
            return
        try:
            build()
        except BaseException as error:
            marker.write_text(f"{type(error).__name__}: {error}", encoding="utf-8")
            raise
        marker.write_text("ok", encoding="utf-8")


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError("uv is not on PATH: run the tests with scripts/test")
    return found


@cache
def find_python(version: str) -> str | None:
    """The interpreter for ``version`` on this machine (uv looks at PATH, pyenv, ...), or None."""
    # --system: not the repository's own .venv, which uv would otherwise offer first.
    command = [uv(), "python", "find", "--system", "--no-python-downloads", version]
    result = run(command, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def available_python_versions() -> list[str]:
    return [version for version in choice_values("python_version") if find_python(version)]


def shared_python_version() -> str:
    """The version the matrix runs on: copier.yml's default, else the newest one available."""
    available = available_python_versions()
    if not available:
        raise RuntimeError("none of the Python versions offered in copier.yml is installed")
    preferred = default("python_version")
    return preferred if preferred in available else available[-1]


# --- The template ------------------------------------------------------------------------------


def snapshot_template(destination: Path) -> None:
    """Commit the working tree's files (tracked and untracked, minus ignored) to a new repo.

    Every render in a session uses this one snapshot, so the tests see a consistent template
    while the working tree changes, and they test exactly what would be committed.
    """
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO
    ).stdout
    destination.mkdir(parents=True)
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git("init", "--quiet", "--initial-branch=main", cwd=destination)
    git("add", "--all", cwd=destination)
    git("commit", "--quiet", "--no-verify", "-m", "Template snapshot", cwd=destination)


def render(
    template: Path,
    destination: Path,
    data: dict[str, object],
    *,
    skip_tasks: bool = True,
    vcs_ref: str = "HEAD",
) -> None:
    """``copier copy --defaults --trust`` in this process (the CLI itself is tested elsewhere).

    Without the tasks, the post-generation hook's formatting step still runs: what the tests check
    is what users get.
    """
    from copier import run_copy

    run_copy(
        str(template),
        str(destination),
        data=data,
        defaults=True,
        unsafe=True,
        skip_tasks=skip_tasks,
        vcs_ref=vcs_ref,
        quiet=True,
    )
    if skip_tasks:
        format_like_the_hook(template, destination)


def format_like_the_hook(template: Path, project: Path) -> None:
    """The post-generation hook's formatting step (``ruff format`` at the project's pin)."""
    hook = template / "hooks" / "post_generate.py"
    run([sys.executable, hook, "format", "-"], cwd=project, env=git_env(), timeout=300)


def project_files(root: Path) -> list[Path]:
    """The files under ``root`` (relative), minus the tools' own directories."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not TOOL_DIRS.intersection(relative.parts):
            found.append(relative)
    return found


def record_rendered_files(project: Path) -> None:
    """Remember what copier wrote, before tools (stub generation, caches) add files."""
    listing = [str(path) for path in project_files(project)]
    manifest_of(project).write_text(json.dumps(listing), encoding="utf-8")


def rendered_files(project: Path) -> list[Path]:
    return [Path(name) for name in json.loads(manifest_of(project).read_text(encoding="utf-8"))]


def manifest_of(project: Path) -> Path:
    return project.with_name(project.name + ".files.json")


# What a project's pytest suite and mypy read: its code, tests, tools and configuration.
CHECK_INPUTS = ("pyproject.toml", "src/", "tests/", "scripts/", "proto/")

# The runtime's own tests, and everything they read: the runtime package, the helpers they
# import or run, and pytest's configuration. They import nothing of the transports (checked by
# test_matrix.py), so projects whose runtime is the same run them once.
RUNTIME_TESTS = "tests/runtime/test_runtime_*.py"
# The service's stall tests: the matrix runs them once per transport (tests/test_matrix.py).
SERVICE_STALL_TESTS = "tests/runtime/test_service_stalls.py"
SERVICE_STALL_TEST_HELPERS = (
    "tests/conftest.py",
    "tests/grpc_support.py",
    "tests/http_support.py",
    "tests/runtime_scenarios.py",
    "tests/runtime_support.py",
    "tests/stalling.py",
)
RUNTIME_TEST_HELPERS = (
    "tests/conftest.py",
    "tests/otlp_receiver.py",
    "tests/runtime/offload_service.py",
    "tests/runtime_scenarios.py",
    "tests/runtime_support.py",
)


def check_inputs_fingerprint(project: Path) -> str:
    """A hash of every rendered file the project's pytest suite and mypy can depend on.

    Two combinations with the same fingerprint (typically ones that differ only in deployment
    files) give the same results, so their suites run once. Any other rendered file whose name
    the code or tests mention (a test that reads the Dockerfile, say) is included too, so a
    dependency on it splits the fingerprint instead of being missed.
    """
    files = rendered_files(project)
    inputs = [file for file in files if str(file).startswith(CHECK_INPUTS)]
    code = "\n".join(
        line
        for file in inputs
        if file.suffix == ".py"
        for line in (project / file).read_text(encoding="utf-8", errors="replace").splitlines()
        if not line.lstrip().startswith("#")  # a comment that names a file does not read it
    )
    inputs += [file for file in files if file not in inputs and file.name in code]
    return fingerprint_of(project, inputs)


def runtime_test_inputs(project: Path) -> list[Path]:
    """The runtime's tests, their helpers, and the package's runtime (with its ``__init__``)."""

    def read(file: Path) -> bool:
        if file.parts[0] == "src":
            return file.parts[2:3] == ("runtime",) or file.parts[2:] == ("__init__.py",)
        return str(file) in RUNTIME_TEST_HELPERS or file.match(RUNTIME_TESTS)

    return [file for file in rendered_files(project) if read(file)]


def runtime_tests_fingerprint(project: Path) -> str:
    """A hash of what the runtime's tests read, and of pytest's configuration."""
    pytest_config = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    extra = json.dumps(pytest_config["tool"]["pytest"], sort_keys=True).encode()
    return fingerprint_of(project, runtime_test_inputs(project), extra)


def fingerprint_of(project: Path, files: Sequence[Path], extra: bytes = b"") -> str:
    digest = hashlib.sha256(extra)
    for file in sorted(files):
        digest.update(str(file).encode() + b"\0" + (project / file).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def shared_outcome(record: Path, compute: Callable[[], dict[str, object]]) -> dict[str, object]:
    """``compute()`` once per ``record`` across workers; later callers read the recorded outcome."""
    with locked(record.with_name(record.name + ".lock")):
        if record.exists():
            outcome: dict[str, object] = json.loads(record.read_text(encoding="utf-8"))
            return outcome
        outcome = compute()
        record.write_text(json.dumps(outcome), encoding="utf-8")
        return outcome


# --- Dependency environments -------------------------------------------------------------------


def requirements_of(pyproject: Path) -> list[str]:
    """The runtime dependencies and the dev group of a rendered pyproject.toml."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    groups = data.get("dependency-groups", {})

    def group(name: str) -> list[str]:
        items: list[str] = []
        for item in groups.get(name, []):
            items.extend(group(item["include-group"]) if isinstance(item, dict) else [item])
        return items

    return [*data["project"].get("dependencies", []), *group("dev")]


def union_of_requirements(pyprojects: Sequence[Path]) -> list[str]:
    """All requirements of all projects; the same package pinned two ways is an error."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    chosen: dict[str, str] = {}
    for pyproject in pyprojects:
        for line in requirements_of(pyproject):
            requirement = Requirement(line)
            key = canonicalize_name(requirement.name) + (
                f"; {requirement.marker}" if requirement.marker else ""
            )
            if chosen.setdefault(key, line) != line:
                raise AssertionError(
                    f"rendered projects pin {requirement.name} differently: {chosen[key]!r} and "
                    f"{line!r}; one shared environment cannot hold both"
                )
    return sorted(chosen.values())


def environment_for(requirements: Sequence[str], python: str) -> Path:
    """A virtual environment with exactly ``requirements``, built once and kept in build/.

    Its directory name is a hash of the requirements and the interpreter, so a change to any
    pin gives a new environment instead of a stale one.
    """
    version = run([python, "-c", "import sys; print(sys.version)"]).stdout.strip()
    key = hashlib.sha256(json.dumps([list(requirements), version]).encode()).hexdigest()[:16]
    venv = CACHE / f"env-{key}"

    def build() -> None:
        shutil.rmtree(venv, ignore_errors=True)
        run([uv(), "venv", "--quiet", "--python", python, venv])
        listing = CACHE / f"env-{key}.txt"
        listing.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        # The lowest version each range allows: what pyproject.toml promises to work with.
        lowest = ["--resolution", "lowest-direct"]
        target = ["--python", venv / "bin" / "python"]
        run([uv(), "pip", "install", "--quiet", *lowest, *target, "-r", listing])

    once(CACHE / f"env-{key}.done", build)
    return venv


def tool_env(venv: Path, *, mypy_cache: Path, pythonpath: str | None = "src") -> dict[str, str]:
    """The environment to run a rendered project's tools with ``venv``."""
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONHOME"}}
    env.update(GIT_IDENTITY)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["MYPY_CACHE_DIR"] = str(mypy_cache)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


# The checks each rendered project must pass, as (name, command relative to the venv).
def own_checks(venv: Path, mypy_cache: Path) -> dict[str, list[str]]:
    python = str(venv / "bin" / "python")
    return {
        "ruff check": [python, "-m", "ruff", "check", "--no-cache", "."],
        "ruff format": [python, "-m", "ruff", "format", "--check", "--no-cache", "."],
        "mypy": [python, "-m", "mypy", "--cache-dir", str(mypy_cache)],
        # -v: when a suite hangs and is killed, the last line names the test that hung.
        "pytest": [python, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--durations=10"],
    }
