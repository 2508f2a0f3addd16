"""What the post-generation and update hooks share: finding uv, running a step, formatting.

The hooks run with copier's own interpreter, so they use the standard library (and PyYAML,
which copier depends on) and reach every other tool through uv.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

PREFIX = "copier-python-service:"


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def uv_command() -> list[str] | None:
    """uv on PATH, or the one installed next to copier (``pip install uv``)."""
    if found := shutil.which("uv"):
        return [found]
    probe = subprocess.run(
        [sys.executable, "-m", "uv", "--version"], capture_output=True, check=False
    )
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def run_step(step: str, command: list[str], *, quiet: bool = False) -> bool:
    """Run one step; on failure print its output (when captured) and return False."""
    say(f"{step} ...")
    result = subprocess.run(command, check=False, capture_output=quiet, text=True)
    if result.returncode != 0:
        if quiet:
            sys.stdout.write(result.stdout + result.stderr)
        say(f"{step} failed.")
    return result.returncode == 0


def git(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check)


def inside_git_work_tree() -> bool:
    if shutil.which("git") is None:
        return False
    result = git("rev-parse", "--is-inside-work-tree")
    return result.returncode == 0 and result.stdout.strip() == "true"


def written_files() -> list[Path]:
    """The files copier has just written here.

    Outside a git work tree (a fresh project, or copier's temporary renderings during an update)
    that is every file. Inside one (``copier update`` rendering into the project, before it merges
    the user's changes back) it is what differs from the last commit: the user's own files are
    untouched at that point, so they are never reformatted.
    """
    if not inside_git_work_tree():
        return sorted(
            path for path in Path().rglob("*") if path.is_file() and ".git" not in path.parts
        )
    changed = git("diff", "--name-only", "-z", "HEAD", "--", ".").stdout
    untracked = git("ls-files", "--others", "--exclude-standard", "-z", "--", ".").stdout
    prefix = git("rev-parse", "--show-prefix").stdout.strip()
    names = {name.removeprefix(prefix) for name in (changed + untracked).split("\0") if name}
    return sorted(Path(name) for name in names if Path(name).is_file())


def ruff_requirement(pyproject: Path = Path("pyproject.toml")) -> str | None:
    """``ruff==X`` as the project pins it in its dev dependencies."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    for line in data.get("dependency-groups", {}).get("dev", []):
        if isinstance(line, str) and re.match(r"ruff\s*[=<>~!]", line):
            return line.replace(" ", "")
    return None


def format_python(uv: list[str], files: list[Path]) -> bool:
    """``ruff format`` the Python files among ``files``, with the ruff the project pins."""
    python = [str(path) for path in files if path.suffix in {".py", ".pyi"}]
    requirement = ruff_requirement()
    if not python or requirement is None:
        return True
    command = [*uv, "tool", "run", "--quiet", "--from", requirement, "ruff", "format"]
    return run_step(
        "formatting the code (ruff format)", [*command, "--no-cache", *python], quiet=True
    )


def unfinished_record(destination: Path) -> Path:
    """Where the post-generation hook leaves the steps that failed, for the closing message.

    Outside the project, so nothing of it is committed; extensions/setup.py reads and removes it.
    """
    key = hashlib.sha256(str(destination.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"copier-python-service-unfinished-{key}.txt"
