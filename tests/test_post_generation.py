"""The post-generation step says honestly whether the new service is ready."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import git, git_env, run


def copier(*args: str | Path, env: dict[str, str]) -> str:
    found = shutil.which("copier")
    assert found, "copier is not on PATH: run the tests with scripts/test"
    return run([found, *map(str, args)], env=env, timeout=600).stdout


def test_a_failed_step_ends_with_not_ready_and_the_command(template: Path, tmp_path: Path) -> None:
    # uv offline with an empty cache cannot lock: the kind of failure a new machine has.
    offline = {**git_env(), "UV_OFFLINE": "1", "UV_CACHE_DIR": str(tmp_path / "empty-cache")}
    project = tmp_path / "svc"

    output = copier(
        "copy", "--trust", "--defaults", "--vcs-ref=HEAD", template, project, env=offline
    )

    assert "locking the dependencies (uv.lock) failed" in output, output
    assert "is ready" not in output, output
    closing = output.split("NOT ready")[-1]
    assert "NOT ready" in output and "uv lock" in closing, output
    # The rest still happened: the project is committed, so the user only runs the commands.
    assert git("log", "--format=%s", cwd=project).strip() == "Generate the service"


def test_skipped_tasks_end_with_not_ready(template: Path, tmp_path: Path) -> None:
    project = tmp_path / "svc"
    output = copier(
        "copy", "--skip-tasks", "--trust", "--defaults", "--vcs-ref=HEAD",
        "--data=transport=grpc", template, project, env=git_env(),
    )  # fmt: skip
    assert "NOT ready" in output and "uv sync" in output.split("NOT ready")[-1], output
