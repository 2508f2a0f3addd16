"""The documentation site builds strictly and explains every question."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml
from combinations import REPO, asked_questions, axes, choice_values
from support import run

DOCS = REPO / "docs"


def nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs")
    assert mkdocs, "mkdocs is not on PATH: run the tests with scripts/test"
    result = run(
        [mkdocs, "build", "--strict", "--site-dir", tmp_path / "site"],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "site" / "questions" / "index.html").is_file()


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(nav_pages(config["nav"]))
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert pages == listed, f"not in the nav: {pages - listed}; missing: {listed - pages}"


def test_every_question_and_choice_is_explained() -> None:
    text = (DOCS / "questions.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} (.+)$", text, flags=re.MULTILINE))
    explained = {name for heading in headings for name in re.findall(r"`(\w+)`", heading)}
    missing = sorted(set(asked_questions()) - explained)
    assert not missing, f"questions.md has no section for: {missing}"
    for name in [*axes(), "python_version"]:
        for value in choice_values(name):
            assert f"`{value}`" in text, f"questions.md does not explain {name}={value}"
