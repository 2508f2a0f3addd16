"""Finish what copier has just rendered: format it, lock, build, and make the first commit.

copier runs this as a task, from the directory it rendered into, as
``post_generate.py OPERATION IS_GRPC``:

- ``copy``: a new project. Format the code, lock the dependencies, build the package (which
  generates the gRPC code from proto/), and make the first commit. A step that fails is recorded
  with the command that finishes it; copier's closing message then says "not ready: run ...".
- ``format``: only the formatting (the template's tests render without tasks, then run this, so
  that they check what users get).
- ``update``: copier renders the old and the new template version in temporary directories and
  into the project, and runs this in each before it merges the user's changes. Only the
  formatting happens here, so that all three are formatted alike; locking and the gRPC code wait
  for the merge (hooks/finish_update.py, a migration that runs after it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from steps import format_python, run_step, say, unfinished_record, uv_command, written_files


def commit_identity() -> list[str]:
    """Options that give ``git commit`` an identity when the machine has none configured.

    A fresh machine or CI runner often has no ``user.name``/``user.email``; then the first commit
    is made in the name of the project's author from the answers file.
    """
    known = all(
        subprocess.run(["git", "var", ident], capture_output=True, check=False).returncode == 0
        for ident in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT")
    )
    if known:
        return []
    import yaml

    answers = yaml.safe_load(Path(".copier-answers.yml").read_text(encoding="utf-8"))
    return [
        "-c",
        f"user.name={answers['author_name']}",
        "-c",
        f"user.email={answers['author_email']}",
    ]


def first_commit() -> None:
    if Path(".git").exists() or not run_step("creating the git repository", ["git", "init", "-q"]):
        return
    subprocess.run(["git", "add", "--all"], check=False)
    run_step(
        "making the first commit",
        ["git", *commit_identity(), "commit", "-q", "--no-verify", "-m", "Generate the service"],
    )


def set_up(is_grpc: bool) -> list[str]:
    """Format, lock and build a new project; returns the commands that finish what failed."""
    uv = uv_command()
    build = ["uv sync"] if is_grpc else []
    if uv is None:
        say("uv was not found, so the code is not formatted, locked or built.")
        return ["pip install uv", "uv run ruff format", "uv lock", *build]
    unfinished = []
    if not format_python(uv, written_files()):
        unfinished.append("uv run ruff format")
    if not run_step("locking the dependencies (uv.lock)", [*uv, "lock"]):
        unfinished.append("uv lock")
    # Building the package (an editable install) generates its gRPC code (hatch_build.py).
    if is_grpc and not run_step("generating the gRPC code (uv sync)", [*uv, "sync", "--quiet"]):
        unfinished.append("uv sync")
    return unfinished


def main() -> int:
    operation, is_grpc = sys.argv[1], sys.argv[2] == "True"
    if operation != "copy":
        uv = uv_command()
        formatted = uv is not None and format_python(uv, written_files())
        return 0 if formatted or operation == "update" else 1
    unfinished = set_up(is_grpc)
    first_commit()
    record = unfinished_record(Path.cwd())
    if unfinished:
        record.write_text("\n".join(unfinished) + "\n", encoding="utf-8")
    else:
        record.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
