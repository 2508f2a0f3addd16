"""``scripts/protos.py``: the generated stubs match the .proto files, and staleness is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PACKAGE, SRC

ROOT = SRC.parent


def protos(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "protos.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_generated_stubs_are_up_to_date() -> None:
    result = protos(ROOT, "--check")
    assert result.returncode == 0, result.stderr


def test_check_detects_a_proto_change_and_regeneration_fixes_it(tmp_path: Path) -> None:
    # A copy of the parts the script works on, so the project itself is left alone.
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(SRC / PACKAGE / "v1", tmp_path / "src" / PACKAGE / "v1")
    proto = tmp_path / "proto" / PACKAGE / "v1" / "documents.proto"
    proto.write_text(
        proto.read_text().replace(
            "message PingRequest {}", "message PingRequest {\n  string note = 1;\n}"
        )
    )

    stale = protos(tmp_path, "--check")
    assert stale.returncode == 1
    assert f"stale: src/{PACKAGE}/v1/documents_pb2.py" in stale.stderr
    assert f"stale: src/{PACKAGE}/v1/documents_pb2.pyi" in stale.stderr
    assert "scripts/protos.py" in stale.stderr  # says how to fix it

    regenerated = protos(tmp_path)
    assert regenerated.returncode == 0, regenerated.stderr
    assert "note" in (tmp_path / "src" / PACKAGE / "v1" / "documents_pb2.pyi").read_text()
    assert protos(tmp_path, "--check").returncode == 0


def test_a_broken_proto_file_is_reported_without_a_traceback(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    proto = tmp_path / "proto" / PACKAGE / "v1" / "documents.proto"
    proto.write_text(proto.read_text().replace("message PingRequest {}", "message PingRequest {"))

    result = protos(tmp_path, "--check")
    assert result.returncode != 0
    assert "documents.proto" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_generated_code_says_what_to_run(tmp_path: Path) -> None:
    # The package without its generated code, as after a clone before `uv sync`.
    package = tmp_path / PACKAGE
    (package / "v1").mkdir(parents=True)
    shutil.copyfile(SRC / PACKAGE / "__init__.py", package / "__init__.py")
    shutil.copyfile(SRC / PACKAGE / "v1" / "__init__.py", package / "v1" / "__init__.py")

    result = subprocess.run(
        [sys.executable, "-c", f"from {PACKAGE}.v1 import documents_pb2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )

    assert result.returncode == 1
    assert "documents_pb2 is missing" in result.stderr
    assert "uv sync" in result.stderr
