"""Finish ``copier update`` after it has merged the user's changes: a migration without version.

copier renders the new template into the project, runs the tasks, re-applies the user's changes,
then runs migrations (stage "after"); this is the last one, run as ``finish_update.py IS_GRPC``
from the project's directory. In order:

1. Files a release moved (hooks/moves.toml): the user's edits of the old file are merged into
   the new one.
2. Files the update deleted (the template dropped them, or an answer such as ``deployment``
   changed) that the user had edited are restored and reported. "Edited" compares the last
   commit with the previous template version rendered with the previous answers.
3. Generated files are made again from the merged sources: the gRPC code (untracked build
   artifacts since 0.2.0; projects from older releases tracked them) and uv.lock. While a
   conflict in pyproject.toml stops ``uv sync``, the gRPC code is made by the build's generator
   alone. A .venv the update broke is removed first.
4. Every file with a conflict or a ``.rej`` is listed, with the commands that finish the update.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from steps import PREFIX, format_python, git, run_step, say, uv_command, written_files

GENERATED_PATTERNS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py", "*_pb2_grpc.pyi")
CONFLICT_MARKERS = (b"<<<<<<< ", b">>>>>>> ")
MOVES = Path(__file__).resolve().parent / "moves.toml"


class Base:
    """The files the user started from: the last version of the template, rendered with the
    last answers (as copier's own temporary copy was, which is gone by now). Rendered on first
    use, since most updates delete and move nothing."""

    def __init__(self) -> None:
        self._root: Path | None = None

    def root(self) -> Path:
        if self._root is None:
            import yaml
            from copier import run_copy

            answers = yaml.safe_load(blob("HEAD", ".copier-answers.yml") or b"{}")
            self._root = Path(tempfile.mkdtemp(prefix="copier-python-service-base."))
            data = {key: value for key, value in answers.items() if not key.startswith("_")}
            run_copy(
                answers["_src_path"],
                str(self._root),
                data=data,
                vcs_ref=answers["_commit"],
                defaults=True,
                unsafe=True,
                skip_tasks=True,
                quiet=True,
            )
            uv = uv_command()
            if uv is not None:
                with working_directory(self._root):
                    format_python(uv, written_files())
        return self._root

    def content(self, path: str) -> bytes | None:
        file = self.root() / path
        return file.read_bytes() if file.is_file() else None

    def edited(self, path: str) -> bool:
        """Whether the last commit's ``path`` differs from what the template had rendered."""
        return blob("HEAD", path) != self.content(path)

    def remove(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def blob(commit: str, path: str) -> bytes | None:
    shown = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, check=False)
    return shown.stdout if shown.returncode == 0 else None


def crossed(version: str) -> bool:
    from packaging.version import Version

    try:
        low = Version(os.environ["VERSION_PEP440_FROM"])
        high = Version(os.environ["VERSION_PEP440_TO"])
    except (KeyError, ValueError):
        return False
    return low < Version(version) <= high


def package_name() -> str:
    import yaml

    answers = yaml.safe_load(Path(".copier-answers.yml").read_text(encoding="utf-8"))
    return str(answers["package_name"])


def carry_moves(base: Base) -> set[str]:
    """Merge the user's edits of each moved file into its new place; returns the old paths."""
    moves = tomllib.loads(MOVES.read_text(encoding="utf-8")).get("moves", [])
    handled = set()
    for move in moves:
        if not crossed(move["version"]):
            continue
        old = move["old"].format(package=package_name())
        new = move["new"].format(package=package_name())
        theirs, ours = Path(new), blob("HEAD", old)
        handled.add(old)
        if ours is None or not base.edited(old):
            continue  # not in the project, or never edited: the template's new file is right
        if not theirs.exists():
            Path(old).write_bytes(ours)  # the release dropped it: keep the user's version
            continue
        Path(old).unlink(missing_ok=True)
        merge_into(theirs, ours, base.content(old) or b"")
        git("rm", "-q", "--cached", "--ignore-unmatch", "--", old)
        say(f"moved your edits of {old} to {new} (the template moved the file)")
    return handled


def merge_into(target: Path, ours: bytes, ancestor: bytes) -> None:
    """Three-way merge as copier does it: the user's side first, markers where both changed."""
    template_side = target.with_name(target.name + ".template-side")
    base_side = target.with_name(target.name + ".base-side")
    template_side.write_bytes(target.read_bytes())
    base_side.write_bytes(ancestor)
    target.write_bytes(ours)
    labels = ["-L", "before updating", "-L", "last update", "-L", "after updating"]
    git("merge-file", *labels, "--", str(target), str(base_side), str(template_side))
    template_side.unlink()
    base_side.unlink()


def keep_edited_deletions(base: Base, skip: set[str]) -> list[str]:
    """Restore the files the update deleted although the user had edited them."""
    deleted = [name for name in git("ls-files", "-z", "--deleted").stdout.split("\0") if name]
    kept = []
    generated = (*(pattern[1:] for pattern in GENERATED_PATTERNS), "uv.lock")
    for name in deleted:
        if name in skip or name.endswith(generated):
            continue
        if base.edited(name):
            git("checkout", "HEAD", "--", name)
            kept.append(name)
    return kept


def untrack_generated_code() -> None:
    """Generated gRPC code is a build artifact; a project from before 0.2.0 committed it."""
    tracked = git("ls-files", "-z", "--", *GENERATED_PATTERNS).stdout.split("\0")
    if names := [name for name in tracked if name]:
        git("rm", "-q", "--cached", "--", *names)
    for pattern in GENERATED_PATTERNS:
        for rejected in Path().rglob(pattern + ".rej"):
            rejected.unlink()


def has_conflict(path: Path) -> bool:
    try:
        return any(line.startswith(CONFLICT_MARKERS) for line in path.read_bytes().splitlines())
    except OSError:
        return False


def conflicts() -> tuple[list[str], list[str]]:
    """Files with conflict markers (or unmerged in the index), and ``.rej`` files."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    names = {name for name in listed.split("\0") if name}
    unmerged = set(git("diff", "--name-only", "--diff-filter=U").stdout.split())
    marked = sorted(
        name for name in names | unmerged if name in unmerged or has_conflict(Path(name))
    )
    status = git("status", "--porcelain", "--ignored", "--untracked-files=all").stdout
    rejected = sorted(line[3:] for line in status.splitlines() if line.endswith(".rej"))
    return marked, rejected


def regenerate(uv: list[str] | None, is_grpc: bool) -> list[str]:
    """uv.lock from the merged pyproject.toml, the gRPC code from the merged .proto files.

    Returns the steps that could not run (a conflict in their input, or no uv).
    """
    pending = []
    lock_file = Path("uv.lock")
    if has_conflict(lock_file) or not lock_file.exists():
        # The lock is made again; the last committed one gives uv its preferred versions. (An
        # update from 0.1.0 deletes it: that release locked in copier's temporary copies.)
        git("checkout", "HEAD", "--", "uv.lock")
    protos_conflicted = any(has_conflict(path) for path in Path("proto").rglob("*.proto"))
    if uv is None:
        say("uv was not found: uv.lock and the gRPC code are not updated.")
        return ["uv lock", *(["uv sync"] if is_grpc else [])]
    lock = [*uv, "lock"]
    merged = not has_conflict(Path("pyproject.toml"))
    if not (merged and run_step("locking the dependencies (uv.lock)", lock, quiet=True)):
        pending.append("uv lock")
    if is_grpc:
        step = "generating the gRPC code from proto/ (uv sync)"
        ready = not (pending or protos_conflicted)
        if not (ready and run_step(step, [*uv, "sync", *reinstall_project()], quiet=True)):
            pending.append("uv sync")
            if not protos_conflicted:
                generate_without_the_project(uv)
    return pending


def generate_without_the_project(uv: list[str]) -> None:
    """The gRPC code from the merged .proto files while ``uv sync`` cannot build the project.

    Most often pyproject.toml has a conflict. The code must not be missing meanwhile: an update
    from a release that committed it has deleted it (it was in that release's rendering, not in
    the new one). The generator is the one the project builds with, in an environment of its own;
    ``uv sync`` makes the code again once the conflicts are resolved.
    """
    pyproject = Path("pyproject.toml")
    # While it has a conflict: the template's side of it (copier puts it at stage 3 of the index).
    text = blob(":3", "pyproject.toml") if has_conflict(pyproject) else None
    text = text or pyproject.read_bytes()
    try:
        requires = tomllib.loads(text.decode())["build-system"]["requires"]
    except (tomllib.TOMLDecodeError, KeyError):
        return
    generator = [f"--with={requirement}" for requirement in requires]
    command = [*uv, "run", "--no-project", "--isolated", *generator, "python", "scripts/protos.py"]
    run_step("generating the gRPC code from proto/ (scripts/protos.py)", command, quiet=True)


def remove_broken_environment() -> None:
    """Remove what an update from 0.1.0 leaves of the project's .venv.

    That release's hook ran uv in copier's temporary copy of the old version, which so had a
    .venv; copier deletes from the project what the old copy had and the new one has not, so the
    .venv loses its files (pyvenv.cfg included) but keeps its symlinks to the Python it was made
    with. uv would take that Python for the environment and install into it; once removed, the
    environment is made again by ``uv sync``.
    """
    venv = Path(".venv")
    if venv.is_dir() and not venv.is_symlink() and not (venv / "pyvenv.cfg").exists():
        shutil.rmtree(venv)
        say("removed .venv, which the update left broken: `uv sync` makes it again")


def reinstall_project() -> list[str]:
    """Build the project again even when uv sees no change (its generated code may be stale)."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    return ["--reinstall-package", project["project"]["name"]]


def report(kept: list[str], pending: list[str]) -> None:
    marked, rejected = conflicts()
    lines = [f"{PREFIX} update summary"]
    lines += [f"  kept     {name}  (you edited it; the template no longer has it)" for name in kept]
    lines += [f"  conflict {name}" for name in marked]
    lines += [f"  rejected {name}" for name in rejected]
    if not (kept or marked or rejected):
        lines.append("  merged without conflicts")
    steps = []
    if marked:
        steps.append("resolve the conflicts: edit the lines between <<<<<<< and >>>>>>>")
    if rejected:
        steps.append("apply each .rej file's hunks by hand, then delete the .rej file")
    if kept:
        steps.append("delete what you no longer need of the kept files: git rm <file>")
    steps += pending
    if "uv lock" not in pending and marked:
        steps.append("uv lock   (again, if you changed pyproject.toml)")
    steps += ["uv run pytest", "git add --all && git commit -m 'Update from the template'"]
    lines.append("Finish the update:")
    lines += [f"  {number}. {step}" for number, step in enumerate(steps, start=1)]
    print("\n".join(lines), flush=True)


def finish(is_grpc: bool) -> None:
    base = Base()
    try:
        moved = carry_moves(base)
        kept = keep_edited_deletions(base, moved)
    finally:
        base.remove()
    if is_grpc:
        untrack_generated_code()
    remove_broken_environment()
    pending = regenerate(uv_command(), is_grpc)
    report(kept, pending)


def main() -> int:
    try:
        finish(is_grpc=sys.argv[1] == "True")
    except Exception as error:
        # The merge itself is done: say what is left instead of failing the whole update.
        say(f"finishing the update failed: {error}")
        print("Finish it by hand: resolve what `git status` shows, then `uv lock`, `uv sync`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
