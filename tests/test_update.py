"""``copier update`` from every release: equal to a fresh generation, and the user's work kept.

The releases are reproduced in a temporary repository (tests/releases.py): each release listed in
releases.toml is tagged at its commit, and the working tree is the next release. A user's project
is generated from a release with the copier CLI, as a user does (the release's own post-generation
hook runs: lock, gRPC code, first commit), and updated with ``copier update``.

To fit CI, the projects share environments: uv installs into one environment per worker and
transport (``UV_PROJECT_ENVIRONMENT``) instead of a new ``.venv`` per project, and the lock file
of a fresh generation is made once per distinct pyproject.toml. No project's test suite runs here:
an updated project equal to a fresh one is checked by the matrix already.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from combinations import REPO, Combination, every_pair_of
from packaging.version import Version
from releases import Release, release_repository, releases
from support import CACHE, git, git_env, once, project_files, render, run, uv

# Which files a project has, and so what an update must merge, depends on the transport and
# the deployment; the executor answer changes one default and a README line. Every pair of the
# first two is updated, with the executor's values taking turns among them.
UPDATES = [
    (release, combination)
    for release in releases()
    for combination in every_pair_of("transport", "deployment")
]
CONFLICT_START = "<<<<<<< before updating"
SCENARIO = Combination(
    (("transport", "grpc_aio"), ("executor", "thread"), ("deployment", "kubernetes"))
)


# --- Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def release_repo(template: Path, session_dir: Path) -> Path:
    """The template's repository with every release tagged, the working tree as the newest."""
    path = session_dir / "releases"
    once(session_dir / "releases.done", lambda: release_repository(template, path))
    return path


@pytest.fixture(scope="session")
def newest_tag(release_repo: Path) -> str:
    tags = git("tag", "--list", "v*", cwd=release_repo).split()
    return max(tags, key=lambda tag: Version(tag))


@pytest.fixture
def user_env(worker_id: str, matrix_python: str) -> Callable[[Combination], dict[str, str]]:
    """The environment copier and the hooks run in: one uv environment per worker and transport."""

    def get(combination: Combination) -> dict[str, str]:
        venv = CACHE / "update-envs" / f"{worker_id}-{combination['transport']}-{matrix_python}"
        return {**git_env(), "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": matrix_python}

    return get


def copier(*args: str | Path, cwd: Path | None = None, env: dict[str, str]) -> str:
    found = shutil.which("copier")
    assert found, "copier is not on PATH: run the tests with scripts/test"
    return run([found, *map(str, args)], cwd=cwd, env=env, timeout=900).stdout


def generate(
    repo: Path, tag: str, combination: Combination, python: str, project: Path, env: dict[str, str]
) -> str:
    """Generate a project from a release with the CLI, hooks included (it is then committed)."""
    data = [f"--data={name}={value}" for name, value in combination.data.items()]
    output = copier(
        "copy", "--trust", "--defaults", f"--vcs-ref={tag}", *data,
        f"--data=python_version={python}", repo, project, env=env,
    )  # fmt: skip
    assert git("status", "--porcelain", cwd=project) == "", "generation left files uncommitted"
    return output


def fresh_lock(pyproject: Path, preferred: bytes | None = None) -> bytes:
    """The uv.lock that locking this pyproject.toml makes, made once per content.

    With ``preferred`` (the lock the project had before the update), uv keeps the versions it
    names wherever the new pyproject still allows them, as the update does: a template update
    never upgrades the project's dependencies by itself (`uv lock --upgrade` does that).
    """
    digest = hashlib.sha256(pyproject.read_bytes() + (preferred or b"")).hexdigest()[:16]
    scratch = CACHE / "fresh-locks" / digest

    def build() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        shutil.copyfile(pyproject, scratch / "pyproject.toml")
        if preferred is not None:
            (scratch / "uv.lock").write_bytes(preferred)
        run([uv(), "lock", "--quiet"], cwd=scratch)

    once(CACHE / "fresh-locks" / f"{digest}.done", build)
    return (scratch / "uv.lock").read_bytes()


def committable_files(project: Path) -> list[str]:
    """What ``git add --all`` would commit: tracked and untracked files, minus ignored ones."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=project)
    return sorted(name for name in set(listed.split("\0")) if name and (project / name).is_file())


def conflicted_files(project: Path) -> list[str]:
    return [
        name
        for name in committable_files(project)
        if CONFLICT_START in (project / name).read_text(encoding="utf-8", errors="replace")
    ]


def rejects(project: Path) -> list[str]:
    status = git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=project)
    return [line[3:] for line in status.splitlines() if line.endswith(".rej")]


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def replace_once(path: Path, old: str, new: str) -> None:
    content = path.read_text(encoding="utf-8")
    assert old in content, f"{path.name} no longer contains {old!r}: adapt the test"
    path.write_text(content.replace(old, new, 1), encoding="utf-8")


# --- Every release x every transport and deployment, without user edits ----------------------


@pytest.mark.matrix
@pytest.mark.parametrize(
    ("release", "combination"), UPDATES, ids=lambda value: str(getattr(value, "version", value))
)
def test_update_from_release_equals_fresh_generation(
    release: Release,
    combination: Combination,
    release_repo: Path,
    newest_tag: str,
    matrix_python: str,
    user_env: Callable[[Combination], dict[str, str]],
    tmp_path: Path,
) -> None:
    env = user_env(combination)
    project = tmp_path / "updated"
    generate(release_repo, release.tag, combination, matrix_python, project, env)
    locked_before = (project / "uv.lock").read_bytes()

    output = copier("update", "--trust", "--defaults", cwd=project, env=env)

    fresh = tmp_path / "fresh"
    render(
        release_repo,
        fresh,
        {**combination.data, "python_version": matrix_python},
        vcs_ref=newest_tag,
    )
    expected = {str(path): (fresh / path).read_bytes() for path in project_files(fresh)}
    expected["uv.lock"] = fresh_lock(fresh / "pyproject.toml", preferred=locked_before)
    got = {name: (project / name).read_bytes() for name in committable_files(project)}
    assert sorted(got) == sorted(expected), (
        f"files only after the update: {sorted(set(got) - set(expected))}; "
        f"only in a fresh generation: {sorted(set(expected) - set(got))}"
    )
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, f"differ from a fresh generation at {newest_tag}: {differing}"
    assert "merged without conflicts" in output, output
    assert not rejects(project)
    if combination["transport"] != "fastapi":
        # The gRPC code was made again from the merged proto (and is not tracked).
        python = Path(env["UV_PROJECT_ENVIRONMENT"]) / "bin" / "python"
        run([python, "scripts/protos.py", "--check"], cwd=project)


# --- A user's edits in every file that is theirs ------------------------------------------------

NEW_RPC = (
    "  // Counts the words of a document.\n  rpc CountWords(PingRequest) returns (PingResponse);\n"
)
USER_CODE = "\n\ndef count_words(text: str) -> int:\n    return len(text.split())\n"
USER_TEST = (
    "from my_service.documents import count_words\n\n\n"
    "def test_counts() -> None:\n    assert count_words('a b') == 2\n"
)
USER_README = "\n## On call\n\nThe payments team.\n"
USER_DEPENDENCY = '    "attrs==25.4.0",\n'


def edit_like_a_user(project: Path, env: dict[str, str]) -> dict[str, str]:
    """Edits in every file the README calls the user's; returns file -> a line that must survive."""
    package = project / "src" / "my_service"
    proto = project / "proto" / "my_service" / "v1" / "documents.proto"
    replace_once(
        proto,
        "  rpc Ping(PingRequest) returns (PingResponse);\n",
        "  rpc Ping(PingRequest) returns (PingResponse);\n" + NEW_RPC,
    )
    append(package / "documents.py", USER_CODE)
    append(package / "api.py", "\n\nCOUNTING_ENABLED = True\n")
    (project / "tests" / "test_counting.py").write_text(USER_TEST, encoding="utf-8")
    append(project / "README.md", USER_README)
    replace_once(
        project / "deploy" / "kubernetes" / "service.yaml",
        "  clusterIP: None\n",
        "  clusterIP: None\n  sessionAffinity: None\n",
    )
    replace_once(
        project / "pyproject.toml", "dependencies = [\n", "dependencies = [\n" + USER_DEPENDENCY
    )
    # As the user would after these edits: lock, and regenerate the gRPC code.
    run([uv(), "lock", "--quiet"], cwd=project, env=env)
    run([uv(), "run", "--quiet", "python", "scripts/protos.py"], cwd=project, env=env)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Count words", cwd=project)
    return {
        "proto/my_service/v1/documents.proto": "rpc CountWords",
        "src/my_service/documents.py": "def count_words(",
        "src/my_service/api.py": "COUNTING_ENABLED = True",
        "tests/test_counting.py": "def test_counts()",
        "README.md": "The payments team.",
        "deploy/kubernetes/service.yaml": "sessionAffinity: None",
        "pyproject.toml": USER_DEPENDENCY.strip(),
        "uv.lock": 'name = "attrs"',
    }


def assert_survive(project: Path, survivors: dict[str, str]) -> None:
    lost = [name for name, line in survivors.items() if line not in (project / name).read_text()]
    assert not lost, f"the user's edits of these files were lost: {lost}"


def changed_by_template(repo: Path, old: str, new: str, python: str, scratch: Path) -> set[str]:
    """The files whose fresh generation differs between two releases (for SCENARIO's answers)."""
    trees = {}
    for tag in (old, new):
        render(repo, scratch / tag, {**SCENARIO.data, "python_version": python}, vcs_ref=tag)
        trees[tag] = {
            str(path): (scratch / tag / path).read_bytes() for path in project_files(scratch / tag)
        }
    return {
        name
        for name in trees[old].keys() | trees[new].keys()
        if trees[old].get(name) != trees[new].get(name)
    }


@pytest.mark.parametrize("release", releases(), ids=lambda release: release.version)
def test_update_from_release_keeps_every_user_edit(
    release: Release,
    release_repo: Path,
    newest_tag: str,
    matrix_python: str,
    user_env: Callable[[Combination], dict[str, str]],
    tmp_path: Path,
) -> None:
    env = user_env(SCENARIO)
    project = tmp_path / "svc"
    generate(release_repo, release.tag, SCENARIO, matrix_python, project, env)
    survivors = edit_like_a_user(project, env)
    # The user's environment is the project's own .venv here: the update must leave it usable.
    own_venv = {name: value for name, value in env.items() if name != "UV_PROJECT_ENVIRONMENT"}
    run([uv(), "venv", "--quiet", ".venv"], cwd=project, env=own_venv)

    output = copier("update", "--trust", "--defaults", cwd=project, env=own_venv)

    venv = project / ".venv"
    assert not venv.exists() or (venv / "pyvenv.cfg").is_file(), (
        f".venv is left broken (uv would install into the Python it links to): {output}"
    )
    assert_survive(project, survivors)
    both_changed = changed_by_template(
        release_repo, release.tag, newest_tag, matrix_python, tmp_path
    )
    for name in conflicted_files(project):
        assert name in survivors and name in both_changed, (
            f"a conflict in {name}, which only one side changed"
        )
        assert f"conflict {name}" in output, f"the update's summary does not list {name}:\n{output}"
    assert not rejects(project)
    generated = project / "src" / "my_service" / "v1" / "documents_pb2_grpc.py"
    assert "CountWords" in generated.read_text(encoding="utf-8"), (
        "the user's RPC is not in the gRPC code"
    )
    assert git("ls-files", "--", "*_pb2*", cwd=project) == "", "generated code is still tracked"
    assert git("check-ignore", str(generated.relative_to(project)), cwd=project).strip()
    # Made from the merged .proto files even while a conflict in pyproject.toml (0.2.0's version
    # ranges next to the user's dependency) keeps `uv sync` from building the project.
    python = Path(env["UV_PROJECT_ENVIRONMENT"]) / "bin" / "python"
    run([python, "scripts/protos.py", "--check"], cwd=project)


# --- A next release that changes what the user changed ------------------------------------------


def bumped(tag: str) -> str:
    major, minor, patch = Version(tag).release[:3]
    return f"{major}.{minor}.{patch + 1}"


TEMPLATE_FIELD = "  string requested_by = 2;\n"
MOVED_NOTE = "# Moved by the template.\n"


def movable_test(repo: Path) -> tuple[str, str]:
    """A plain (not .jinja) template-owned test that gRPC projects have, and where it moves to."""
    tests = repo / "template" / "tests"
    found = sorted(
        path
        for path in tests.rglob("test_*.py")
        if "http" not in path.name and "moved" not in path.parts
    )
    assert found, f"no plain test file under {tests} to move"
    old = found[0].relative_to(repo / "template").as_posix()
    return old, f"tests/moved/{found[0].name}"


BOTH_CHANGED = ["pyproject.toml"]


def release_changing_what_users_change(repo: Path, version: str) -> None:
    """The next release: a proto field, a dependency, a manifest line, and a moved file."""
    template = repo / "template"
    proto = template / "proto" / "{{package_name}}" / "v1" / "documents.proto.jinja"
    replace_once(proto, "message PingRequest {}", "message PingRequest {\n" + TEMPLATE_FIELD + "}")
    pyproject = template / "pyproject.toml.jinja"
    replace_once(
        pyproject, "dependencies = [\n", 'dependencies = [\n    "typing-extensions==4.16.0",\n'
    )
    manifest = template / "deploy" / "kubernetes" / "service.yaml.jinja"
    replace_once(
        manifest, "  clusterIP: None\n", "  publishNotReadyAddresses: false\n  clusterIP: None\n"
    )
    old, new = movable_test(repo)
    moved = template / new
    moved.parent.mkdir(parents=True, exist_ok=True)
    (template / old).rename(moved)
    moved.write_text(MOVED_NOTE + moved.read_text(encoding="utf-8"), encoding="utf-8")
    move = f'{{ version = "{version}", old = "{old}", new = "{new}" }}'
    replace_once(repo / "hooks" / "moves.toml", "moves = [\n", f"moves = [\n    {move},\n")
    git("add", "--all", cwd=repo)
    git("commit", "--quiet", "-m", f"Release {version}", cwd=repo)
    git("tag", f"v{version}", cwd=repo)


def test_update_merges_a_template_change_to_what_the_user_changed(
    release_repo: Path,
    newest_tag: str,
    matrix_python: str,
    user_env: Callable[[Combination], dict[str, str]],
    tmp_path: Path,
) -> None:
    repo = tmp_path / "template"
    git("clone", "--quiet", str(release_repo), str(repo), cwd=tmp_path)
    git("checkout", "--quiet", "-B", "next", newest_tag, cwd=repo)
    env = user_env(SCENARIO)
    project = tmp_path / "svc"
    generate(repo, newest_tag, SCENARIO, matrix_python, project, env)
    survivors = edit_like_a_user(project, env)
    moved_from, moved_to = movable_test(repo)
    append(project / moved_from, "\n\ndef test_added_by_the_user() -> None:\n    assert True\n")
    git("commit", "--quiet", "--all", "-m", "A test of our own", cwd=project)
    release_changing_what_users_change(repo, bumped(newest_tag))

    output = copier("update", "--trust", "--defaults", cwd=project, env=env)

    # Same lines changed on both sides: a conflict each, listed with the commands that finish.
    assert conflicted_files(project) == BOTH_CHANGED, output
    summary = output.split("update summary")[-1]
    for name in BOTH_CHANGED:
        assert f"conflict {name}" in summary, output
    for command in ("uv lock", "uv sync", "uv run pytest"):
        assert command in summary.split("Finish the update:")[-1], output
    # Different lines, even next to each other: merged.
    manifest = (project / "deploy" / "kubernetes" / "service.yaml").read_text(encoding="utf-8")
    assert (
        "  publishNotReadyAddresses: false\n  clusterIP: None\n  sessionAffinity: None\n"
        in manifest
    )
    proto = (project / "proto" / "my_service" / "v1" / "documents.proto").read_text(
        encoding="utf-8"
    )
    assert "rpc CountWords" in proto and TEMPLATE_FIELD in proto
    assert_survive(project, survivors)
    # The moved file has the user's test and the template's change; the old one is gone.
    moved = (project / moved_to).read_text(encoding="utf-8")
    assert "test_added_by_the_user" in moved and moved.startswith(MOVED_NOTE)
    assert not (project / moved_from).exists()
    assert not rejects(project)

    # The user keeps both sides of each conflict, then runs the commands of the summary.
    markers = ("<<<<<<<", "=======", ">>>>>>>")
    for name in BOTH_CHANGED:
        lines = (project / name).read_text(encoding="utf-8").splitlines(keepends=True)
        kept = "".join(line for line in lines if not line.startswith(markers))
        (project / name).write_text(kept, encoding="utf-8")
    run([uv(), "lock", "--quiet"], cwd=project, env=env)
    run([uv(), "sync", "--quiet"], cwd=project, env=env)
    code = project / "src" / "my_service" / "v1"
    assert "requested_by" in (code / "documents_pb2.pyi").read_text(encoding="utf-8")
    assert "CountWords" in (code / "documents_pb2_grpc.py").read_text(encoding="utf-8")
    assert 'name = "typing-extensions"' in (project / "uv.lock").read_text(encoding="utf-8")


# --- An answer change never deletes an edited file silently ------------------------------------


def test_changing_the_deployment_keeps_an_edited_manifest(
    release_repo: Path,
    newest_tag: str,
    matrix_python: str,
    user_env: Callable[[Combination], dict[str, str]],
    tmp_path: Path,
) -> None:
    combination = Combination(
        (("transport", "fastapi"), ("executor", "process"), ("deployment", "kubernetes"))
    )
    env = user_env(combination)
    project = tmp_path / "svc"
    generate(release_repo, newest_tag, combination, matrix_python, project, env)
    manifest = project / "deploy" / "kubernetes" / "deployment.yaml"
    replace_once(manifest, "revisionHistoryLimit: 5", "revisionHistoryLimit: 7")
    git("commit", "--quiet", "--all", "-m", "Longer history", cwd=project)
    # A later commit of an update must not hide the edit (it is compared with the rendering).
    append(project / "README.md", "\nNotes.\n")
    git("commit", "--quiet", "--all", "-m", "Notes", cwd=project)

    output = copier(
        "update", "--trust", "--defaults", "--data=deployment=compose", cwd=project, env=env
    )

    assert "revisionHistoryLimit: 7" in manifest.read_text(encoding="utf-8"), (
        "the edited manifest was deleted"
    )
    assert "kept     deploy/kubernetes/deployment.yaml" in output, output
    assert "git rm" in output
    assert not (project / "deploy" / "kubernetes" / "service.yaml").exists(), (
        "an unedited manifest stayed"
    )
    assert (project / "deploy" / "compose").is_dir()


# --- Real versions ------------------------------------------------------------------------------


def test_check_update_reports_release_versions(
    release_repo: Path, newest_tag: str, tmp_path: Path
) -> None:
    oldest = releases()[0]
    project = tmp_path / "svc"
    copier(
        "copy",
        "--trust",
        "--defaults",
        "--skip-tasks",
        f"--vcs-ref={oldest.tag}",
        release_repo,
        project,
        env=git_env(),
    )
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["_commit"] == oldest.tag
    git("init", "--quiet", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Generate", cwd=project)

    output = copier("check-update", cwd=project, env=git_env())

    newest = str(Version(newest_tag))
    assert f"Current version is {oldest.version}, latest version is {newest}" in output, output


def test_every_release_has_a_changelog_section() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+\.\d+\.\d+)", changelog, flags=re.MULTILINE))
    missing = [release.version for release in releases() if release.version not in sections]
    assert not missing, f"releases without a section in CHANGELOG.md: {missing}"
