"""``copier update`` brings template changes into a project and keeps the user's own edits."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from support import git, git_env, project_files, run

USER_RULE = '''

def reject_empty_titles(document: object) -> list[str]:
    """A rule the service's owner added after generating it."""
    if isinstance(document, dict) and document.get("title") == "":
        return ["title: must not be empty"]
    return []
'''
USER_IGNORE = "# Added by the service's owner.\nlocal-notes/\n"
TEMPLATE_IGNORE = "\n# Profiles written by py-spy and cProfile.\n*.prof\n"
TEMPLATE_NEW_FILE = "# Changes\n\n- 1.1.0: ignore profiler output.\n"


def copier(*args: str | Path, cwd: Path | None = None) -> str:
    found = shutil.which("copier")
    assert found, "copier is not on PATH: run the tests with scripts/test"
    return run([found, *map(str, args)], cwd=cwd, env=git_env(), timeout=600).stdout


def test_update_keeps_user_edits_and_brings_template_changes(
    template: Path, tmp_path: Path
) -> None:
    # The template as released: version 1.0.0.
    scratch = tmp_path / "template"
    git("clone", "--quiet", str(template), str(scratch), cwd=tmp_path)
    git("tag", "v1.0.0", cwd=scratch)

    # A user generates a service (the hook makes the first commit) and edits it.
    project = tmp_path / "svc"
    copier("copy", "--trust", "--defaults", scratch, project)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["_commit"] == "v1.0.0"
    documents = project / "src" / answers["package_name"] / "documents.py"
    documents.write_text(documents.read_text(encoding="utf-8") + USER_RULE, encoding="utf-8")
    ignore = project / ".gitignore"
    ignore.write_text(USER_IGNORE + ignore.read_text(encoding="utf-8"), encoding="utf-8")
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Add a validation rule", cwd=project)

    # The template moves on: version 1.1.0 changes a file the user also edited, and adds one.
    template_ignore = scratch / "template" / ".gitignore"
    template_ignore.write_text(
        template_ignore.read_text(encoding="utf-8") + TEMPLATE_IGNORE, encoding="utf-8"
    )
    (scratch / "template" / "CHANGES.md").write_text(TEMPLATE_NEW_FILE, encoding="utf-8")
    git("add", "--all", cwd=scratch)
    git("commit", "--quiet", "-m", "Ignore profiler output", cwd=scratch)
    git("tag", "v1.1.0", cwd=scratch)

    copier("update", "--defaults", "--trust", cwd=project)

    updated = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert updated["_commit"] == "v1.1.0"
    assert USER_RULE in documents.read_text(encoding="utf-8"), "the user's rule was lost"
    merged = ignore.read_text(encoding="utf-8")
    assert merged.startswith(USER_IGNORE), "the user's lines in .gitignore were lost"
    assert "*.prof" in merged, "the template's change to .gitignore did not arrive"
    assert (project / "CHANGES.md").read_text(encoding="utf-8") == TEMPLATE_NEW_FILE
    leftovers = [
        str(path)
        for path in project_files(project)
        if path.suffix == ".rej" or "<<<<<<<" in (project / path).read_text(errors="replace")
    ]
    assert not leftovers, f"merge conflicts left behind: {leftovers}"
