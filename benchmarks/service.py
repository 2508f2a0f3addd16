"""What the benchmarks share: a generated project's answers, and its service in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def answer(project: Path, name: str) -> str:
    """One answer from the project's ``.copier-answers.yml``."""
    answers = (project / ".copier-answers.yml").read_text()
    match = re.search(rf"^{name}:\s*(\S+)", answers, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no {name} in {project}/.copier-answers.yml: is it a generated project?")
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """``python -m <package>`` of the project on a free loopback port, until the block ends.

    ``ready(port)`` says whether the service answers as ready; ``settings`` become environment
    variables with the project's prefix (``log_level="warning"`` -> ``MY_SERVICE_LOG_LEVEL``).
    The service's output is discarded: stall reports, frequent with threads under CPU-bound
    load, would garble the table.
    """

    def __init__(self, project: Path, ready: Callable[[int], bool], **settings: object) -> None:
        package = answer(project, "package_name")
        self.port = free_port()
        self.ready = ready
        settings = {"host": "127.0.0.1", "port": self.port, "drain_delay": 0, **settings}
        self.env = dict(os.environ)
        self.env.update({f"{package.upper()}_{k.upper()}": str(v) for k, v in settings.items()})
        self.command = [str(project / ".venv" / "bin" / "python"), "-m", package]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> int:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.ready(self.port):
                return self.port
            time.sleep(0.1)
        raise RuntimeError("the service did not become ready within 60 s")

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
