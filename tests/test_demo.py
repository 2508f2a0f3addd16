"""``scripts/demo`` as a newcomer runs it: it starts a service, says how to call it, keeps edits.

It runs in a copy of the repository (the session's template snapshot), so the real build/demo
is never touched; the copy bootstraps its own tools the way a fresh clone does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import git_env, run, spawn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def clone(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository as committed, tools not yet installed."""
    path = tmp_path_factory.mktemp("demo") / "repo"
    shutil.copytree(template, path, symlinks=True)
    return path


@contextmanager
def demo(clone: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    env = {**git_env(), "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    with spawn(["bash", clone / "scripts" / "demo", *args], cwd=clone, env=env) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 600) -> list[str]:
    """Lines of output up to the one containing ``marker``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed:\n" + "\n".join(lines[-60:]))


def call_until_it_answers(command: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = run(shlex.split(command), check=False, timeout=30)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, f"`{command}` failed:\n{result.stdout}"
            return result.stdout
        time.sleep(0.5)


def printed_command(lines: list[str], end: str) -> str:
    (line,) = [line.strip() for line in lines if line.strip().endswith(end)]
    return line


def test_demo_starts_says_how_to_call_it_and_keeps_edits(clone: Path) -> None:
    port = free_port()
    with demo(clone, "--data", f"port={port}") as process:
        lines = read_until(process, "Stop it with Ctrl-C")
        ping = printed_command(lines, "/v1/ping")
        assert ping == f"curl -s localhost:{port}/v1/ping"
        call_until_it_answers(ping)
    project = clone / "build" / "demo"
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nMy notes.\n")

    with demo(clone) as process:
        lines = read_until(process, "Stop it with Ctrl-C")
        assert any("your edits are kept" in line for line in lines), lines
        call_until_it_answers(f"curl -s localhost:{port}/readyz")
    assert readme.read_text().endswith("My notes.\n")

    refused = run(["bash", clone / "scripts" / "demo", "--data", "transport=grpc"], cwd=clone,
                  env=git_env(), check=False)  # fmt: skip
    assert refused.returncode == 2
    assert "scripts/demo --fresh --data transport=grpc" in refused.stdout
    assert readme.read_text().endswith("My notes.\n")

    with demo(clone, "--fresh", "--data", f"port={port}") as process:
        lines = read_until(process, "README.md")
        assert any("deleting build/demo, which has uncommitted edits" in line for line in lines)
