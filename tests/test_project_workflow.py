"""The generated project's own workflow: CI, the task runner, pre-commit, and what it ships.

The CI workflow goes through actionlint; each of its commands is a Makefile target; the
pre-commit hooks run offline with the project's own locked tools, and fail on a type error; buf
lints the .proto files and catches a breaking change; every document the generated code points
to exists in the project; each license choice gives a LICENSE and a valid SPDX expression.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from combinations import Combination, choice_values, covering_set, default
from support import git, render, run, uv

TRANSPORTS = choice_values("transport")
MAKE_RUN = re.compile(r"make (?P<target>[a-z][\w-]*)(?: [A-Z_]+=\S+)*")


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not on PATH: run the tests with scripts/test"
    return found


@pytest.fixture(scope="module")
def by_transport(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One project per transport, rendered with the other answers at their defaults."""
    root = tmp_path_factory.mktemp("by-transport")
    projects = {}
    for transport in TRANSPORTS:
        projects[transport] = root / transport
        render(template, projects[transport], {"transport": transport})
    return projects


def workflow(project: Path) -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(
        (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    )
    return loaded


def ci_commands(project: Path) -> dict[str, list[str]]:
    """The ``run:`` commands of each job of the generated CI workflow."""
    jobs = workflow(project)["jobs"]
    assert isinstance(jobs, dict)
    return {
        name: [step["run"] for step in job["steps"] if "run" in step] for name, job in jobs.items()
    }


def make_targets(project: Path) -> dict[str, list[str]]:
    """The Makefile's targets and their prerequisites."""
    text = (project / "Makefile").read_text(encoding="utf-8")
    return {
        match["target"]: match["needs"].split()
        for match in re.finditer(r"^(?P<target>[a-z][\w-]*):(?P<needs>[^=\n]*)$", text, re.M)
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_actionlint_accepts_the_generated_workflow(
    transport: str, by_transport: dict[str, Path]
) -> None:
    tool("shellcheck")  # actionlint checks run: scripts with it when it is on PATH
    ci = by_transport[transport] / ".github" / "workflows" / "ci.yml"
    result = run([tool("actionlint"), "-no-color", ci], check=False)
    assert result.returncode == 0, result.stdout


def test_actionlint_rejects_a_broken_workflow(
    by_transport: dict[str, Path], tmp_path: Path
) -> None:
    """Negative control: an unknown expression context is reported."""
    text = (by_transport["fastapi"] / ".github" / "workflows" / "ci.yml").read_text()
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace("github.event_name", "gitlab.event_name", 1))
    assert run([tool("actionlint"), "-no-color", broken], check=False).returncode != 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_ci_command_is_a_make_target(transport: str, by_transport: dict[str, Path]) -> None:
    """CI runs `make <target>` and nothing else, so a developer runs exactly what CI runs."""
    project = by_transport[transport]
    targets = make_targets(project)
    commands = ci_commands(project)
    for job, runs in commands.items():
        for command in runs:
            match = MAKE_RUN.fullmatch(command)
            assert match, f"job {job} runs {command!r}, not a make target"
            assert match["target"] in targets, f"job {job}: no target {match['target']!r}"
            dry = run(["make", "--dry-run", match["target"]], cwd=project, check=False)
            assert dry.returncode == 0, dry.stdout
    checks = [command.split()[1] for command in commands["checks"]]
    proto = ["proto-lint"] if transport != "fastapi" else []
    assert targets["check"] == [*checks, *proto], "`make check` is not what CI checks"
    assert ("proto" in commands) == (transport != "fastapi")


def test_ci_builds_the_image_with_the_layer_cache(by_transport: dict[str, Path]) -> None:
    jobs = workflow(by_transport["fastapi"])["jobs"]
    assert isinstance(jobs, dict)
    (build,) = [s for s in jobs["image"]["steps"] if "build-push-action" in s.get("uses", "")]
    assert build["with"]["cache-from"] == "type=gha"
    assert build["with"]["cache-to"] == "type=gha,mode=max"
    update = jobs["template-update"]
    assert "schedule" in update["if"]
    assert "copier check-update" in " ".join(make_recipe(by_transport["fastapi"], "template-check"))


def make_recipe(project: Path, target: str) -> list[str]:
    return run(["make", "--dry-run", target], cwd=project).stdout.splitlines()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_python_version_file_and_ranges(transport: str, by_transport: dict[str, Path]) -> None:
    """uv picks the answered Python (and may fetch it); pyproject.toml has ranges, uv.lock pins."""
    project = by_transport[transport]
    assert (project / ".python-version").read_text() == default("python_version") + "\n"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert "python-downloads" not in pyproject.get("tool", {}).get("uv", {})
    requirements = [
        *pyproject["project"]["dependencies"],
        *pyproject["dependency-groups"]["dev"],
        *pyproject["build-system"]["requires"],
    ]
    pinned = [requirement for requirement in requirements if "==" in requirement]
    assert not pinned, f"exact pins belong in uv.lock: {pinned}"
    assert any(r.startswith("pre-commit>=") for r in pyproject["dependency-groups"]["dev"])


def test_dependabot_updates_the_lock_the_actions_and_the_base_image(
    by_transport: dict[str, Path],
) -> None:
    project = by_transport["fastapi"]
    config = yaml.safe_load((project / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    ecosystems = {update["package-ecosystem"]: update["directory"] for update in config["updates"]}
    assert ecosystems == {"uv": "/", "github-actions": "/", "docker": "/"}
    assert (project / "pyproject.toml").is_file() and (project / "Dockerfile").is_file()


DOC_REFERENCE = re.compile(r"\bdocs/[\w/.-]+\.md\b")
MARKDOWN_LINK = re.compile(r"\]\((?!https?:)([^)#\s]+\.md)(?:#[^)]*)?\)")


@pytest.mark.parametrize("combination", covering_set(), ids=str)
def test_documents_the_code_points_to_are_shipped(
    combination: Combination, rendered: Callable[[Combination], Path]
) -> None:
    """Every ``docs/....md`` named in a generated file, and every link between them, exists."""
    project = rendered(combination)
    missing = []
    named = set()
    for path in project.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".yaml", ".yml", ".json", ".md", ".toml"}:
            for reference in DOC_REFERENCE.findall(path.read_text(encoding="utf-8")):
                named.add(reference)
                if not (project / reference).is_file():
                    missing.append(f"{path.relative_to(project)} names {reference}")
    for page in (project / "docs").rglob("*.md"):
        for link in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            if not (page.parent / link).resolve().is_file():
                missing.append(f"{page.relative_to(project)} links {link}")
    assert named, "no generated file names a document: the check would pass vacuously"
    assert not missing, "\n".join(missing)


LICENSE_STARTS = {"MIT": "MIT License", "Apache-2.0": "Apache License", "Proprietary": "Copyright"}


@pytest.mark.parametrize("license_name", choice_values("license"))
def test_each_license_choice(license_name: str, template: Path, tmp_path: Path) -> None:
    """LICENSE holds the chosen text and pyproject.toml a valid SPDX expression for it."""
    from packaging.licenses import canonicalize_license_expression

    project = tmp_path / "svc"
    render(template, project, {"license": license_name, "author_name": "Ada Lovelace"})
    text = (project / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith(LICENSE_STARTS[license_name]), text[:200]
    assert text.endswith("\n") and not text.endswith("\n\n")
    if license_name != "Apache-2.0":
        assert "Ada Lovelace" in text
    expression = tomllib.loads((project / "pyproject.toml").read_text())["project"]["license"]
    assert canonicalize_license_expression(expression) == expression
    assert (project / "CHANGELOG.md").read_text().startswith("# Changelog\n")


# --- Run on a real project: pre-commit offline, buf ---------------------------------------------


@pytest.fixture(scope="module")
def locked_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gRPC project with its lock file, its own environment, its stubs, and one commit."""
    project = tmp_path_factory.mktemp("locked") / "svc"
    render(template, project, {"transport": "grpc_aio"})
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(project / ".venv")}
    run([uv(), "lock", "--quiet"], cwd=project, env=env, timeout=300)
    run([uv(), "sync", "--quiet", "--locked"], cwd=project, env=env, timeout=600)
    run([uv(), "run", "--locked", "python", "scripts/protos.py"], cwd=project, env=env)
    git("init", "--quiet", "--initial-branch=main", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Generated", cwd=project)
    return project


def pre_commit(project: Path, home: Path) -> tuple[int, str]:
    """``pre-commit run --all-files`` offline: uv may not download, and pre-commit's store
    (``home``) is empty, so a hook that needed a repository or an environment would fail."""
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env.update(UV_OFFLINE="1", PRE_COMMIT_HOME=str(home), MYPY_CACHE_DIR=str(home / "mypy"))
    command = [uv(), "run", "--locked", "pre-commit", "run", "--all-files", "--color", "never"]
    result = run(command, cwd=project, env=env, check=False, timeout=600)
    return result.returncode, result.stdout


def test_pre_commit_runs_offline_with_the_project_tools(
    locked_project: Path, tmp_path: Path
) -> None:
    status, output = pre_commit(locked_project, tmp_path / "pre-commit")
    assert status == 0, output
    hooks = yaml.safe_load((locked_project / ".pre-commit-config.yaml").read_text())
    (local,) = hooks["repos"]
    assert local["repo"] == "local"
    for hook in local["hooks"]:
        assert re.search(rf"^{re.escape(hook['name'])}\.+Passed$", output, re.M), output
    stored = [path.name for path in (tmp_path / "pre-commit").glob("repo*")]
    assert not stored, f"pre-commit downloaded hook repositories: {stored}"


def test_pre_commit_fails_on_a_type_error(locked_project: Path, tmp_path: Path) -> None:
    """Negative control: the mypy hook really type-checks."""
    copy = tmp_path / "svc"
    shutil.copytree(locked_project, copy, symlinks=True)
    shutil.rmtree(copy / ".venv")
    package = yaml.safe_load((copy / ".copier-answers.yml").read_text())["package_name"]
    documents = copy / "src" / package / "documents.py"
    documents.write_text(documents.read_text() + '\n\nWRONG: int = "text"\n')
    git("add", "--all", cwd=copy)
    status, output = pre_commit(copy, tmp_path / "pre-commit")
    assert status != 0
    assert re.search(r"^mypy\.+Failed$", output, re.M), output
    assert 'Incompatible types in assignment (expression has type "str"' in output


def test_buf_lints_the_protos_and_catches_a_breaking_change(locked_project: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    run(["make", "proto-lint"], cwd=locked_project, env=env)
    run(["make", "proto-breaking"], cwd=locked_project, env=env)
    package = yaml.safe_load((locked_project / ".copier-answers.yml").read_text())["package_name"]
    proto = locked_project / "proto" / package / "v1" / "documents.proto"
    original = proto.read_text()
    try:
        git("checkout", "--quiet", "-b", "change", cwd=locked_project)
        proto.write_text(original.replace("string document_json = 1;", "int32 document_json = 1;"))
        result = run(["make", "proto-breaking"], cwd=locked_project, env=env, check=False)
        assert result.returncode != 0, result.stdout
        assert 'changed type from "string" to "int32"' in result.stdout
    finally:
        proto.write_text(original)
        git("checkout", "--quiet", "main", cwd=locked_project)


def test_template_check_fails_when_the_template_has_a_newer_version(
    template: Path, tmp_path: Path
) -> None:
    """The scheduled CI job's command: exit 0 while up to date, non-zero once a new tag exists."""
    source = tmp_path / "template"
    shutil.copytree(template, source)
    git("tag", "v1.0.0", cwd=source)
    project = tmp_path / "svc"
    render(template=source, destination=project, data={}, vcs_ref="v1.0.0")
    git("init", "--quiet", "--initial-branch=main", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Generated", cwd=project)
    copier = f"COPIER={tool('copier')}"

    current = run(["make", "template-check", copier], cwd=project, check=False)
    assert current.returncode == 0, current.stdout

    git("commit", "--quiet", "--allow-empty", "-m", "A fix", cwd=source)
    git("tag", "v1.1.0", cwd=source)
    newer = run(["make", "template-check", copier], cwd=project, check=False)
    assert newer.returncode != 0, newer.stdout
    assert "The template has a newer version: run copier update" in newer.stdout
