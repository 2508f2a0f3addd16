"""The template's releases (releases.toml, CHANGELOG.md), reproduced in a temporary repository.

``release_repository`` clones the template's history, tags every listed release at its commit,
and adds the working tree (the session's snapshot) as the next release, tagged with the newest
version in CHANGELOG.md (or, when that one is released already, the version after
it). copier then sees real versions, as users of the published template do.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from combinations import REPO
from support import git, run


@dataclass(frozen=True)
class Release:
    version: str
    commit: str

    @property
    def tag(self) -> str:
        return f"v{self.version}"


@cache
def releases() -> list[Release]:
    """The published releases, oldest first."""
    data = tomllib.loads((REPO / "releases.toml").read_text(encoding="utf-8"))
    return [Release(item["version"], item["commit"]) for item in data["releases"]]


def next_version() -> str:
    """The version the working tree will be released as: CHANGELOG.md's first section."""
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    found = re.search(r"^## (\d+\.\d+\.\d+)", changelog, flags=re.MULTILINE)
    assert found, "CHANGELOG.md has no '## <version>' section"
    return found.group(1)


def release_repository(snapshot: Path, destination: Path) -> str:
    """A template repository with every release tagged; returns the working tree's tag."""
    run(["git", "clone", "--quiet", "--no-checkout", REPO, destination])
    for release in releases():
        found = run(
            ["git", "cat-file", "-e", f"{release.commit}^{{commit}}"], cwd=destination, check=False
        )
        assert found.returncode == 0, (
            f"release {release.version}'s commit {release.commit} is not in this clone's history: "
            "fetch the whole history (git fetch --unshallow, or fetch-depth: 0 in CI)"
        )
        git("tag", release.tag, release.commit, cwd=destination)
    newest = next_version()
    if newest in {release.version for release in releases()}:
        # Released, and the next version's section is not started yet: the working tree is
        # that release plus changes.
        newest += ".post1.dev0"
    git("fetch", "--quiet", str(snapshot), "HEAD", cwd=destination)
    git("tag", f"v{newest}", "FETCH_HEAD", cwd=destination)
    git("checkout", "--quiet", f"v{newest}", cwd=destination)
    return f"v{newest}"
