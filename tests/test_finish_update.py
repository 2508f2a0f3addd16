"""The update summary finds every conflict and every ``.rej`` file (hooks/finish_update.py).

The whole update is tested in test_update.py; this covers what one update cannot show at once:
a ``.rej`` file from ``--conflict rej`` that the project's .gitignore hides, and an unmerged
index entry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from combinations import REPO
from support import git

sys.path.insert(0, str(REPO / "hooks"))
import finish_update


def test_summary_lists_conflicts_and_rejects_even_ignored_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    git("init", "--quiet", cwd=tmp_path)
    (tmp_path / ".gitignore").write_text("*.rej\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# Service\n", encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text("[project]\n", encoding="utf-8")
    git("add", "--all", cwd=tmp_path)
    git("commit", "--quiet", "-m", "Generate", cwd=tmp_path)
    conflict = "<<<<<<< before updating\nmine\n=======\ntheirs\n>>>>>>> after updating\n"
    (tmp_path / "pyproject.toml").write_text(conflict, encoding="utf-8")
    (tmp_path / "README.md.rej").write_text("@@ -1 +1 @@\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    assert finish_update.conflicts() == (["pyproject.toml"], ["README.md.rej"])
    finish_update.report(kept=[], pending=["uv lock"])

    summary = capsys.readouterr().out
    assert "conflict pyproject.toml" in summary
    assert "rejected README.md.rej" in summary
    steps = summary.split("Finish the update:")[1]
    assert steps.index("resolve the conflicts") < steps.index(".rej") < steps.index("uv lock")
