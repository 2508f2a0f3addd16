"""Finish a freshly generated (or updated) service: gRPC stubs, lock file, first commit.

copier runs this from the new project's directory as ``post_generate.py OPERATION IS_GRPC``.
Each step needs a tool the user may not have; a missing tool is reported with the command to
run later instead of failing the whole generation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def uv_command() -> list[str] | None:
    """uv on PATH, or the one installed next to copier (``pip install uv``)."""
    if found := shutil.which("uv"):
        return [found]
    probe = subprocess.run(
        [sys.executable, "-m", "uv", "--version"], capture_output=True, check=False
    )
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def run(step: str, command: list[str]) -> bool:
    print(f"copier-python-service: {step} ...", flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        print(f"copier-python-service: {step} failed; run `{' '.join(command)}` later.")
    return result.returncode == 0


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


def main() -> int:
    operation, is_grpc = sys.argv[1], sys.argv[2] == "True"
    uv = uv_command()
    if uv is None:
        print(
            "copier-python-service: uv was not found, so no lock file and no gRPC stubs "
            "were made.\n"
            "  Install uv (pip install uv), then run `uv lock`"
            + (" and `uv run python scripts/protos.py`." if is_grpc else ".")
        )
    else:
        run("locking dependencies (uv.lock)", [*uv, "lock"])
        if is_grpc:
            run("generating gRPC stubs", [*uv, "run", "python", "scripts/protos.py"])
    if operation == "copy" and shutil.which("git") and not Path(".git").exists():
        run("creating the git repository", ["git", "init", "--quiet"])
        subprocess.run(["git", "add", "--all"], check=False)
        run(
            "making the first commit",
            [
                "git",
                *commit_identity(),
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                "Generate the service with copier",
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
