"""What the benchmarks share: a generated project's answers, and a server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


def answer(project: Path, name: str) -> str:
    """One answer from the project's ``.copier-answers.yml``."""
    answers = (project / ".copier-answers.yml").read_text()
    match = re.search(rf"^{name}:\s*(\S+)", answers, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no {name} in {project}/.copier-answers.yml: is it a generated project?")
    return match.group(1).strip("'\"")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def project_python(project: Path) -> str:
    return str(project / ".venv" / "bin" / "python")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` on ``cpus``; threads it starts later inherit that."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            os.sched_setaffinity(int(thread), cpus)


TICK = os.sysconf("SC_CLK_TCK")  # the unit of /proc's CPU times


def process_cpu(pid: int) -> tuple[int, float]:
    """Process ``pid``'s parent and the CPU seconds it has used so far, all its threads, user
    and system (Linux: ``/proc/<pid>/stat``)."""
    # After the command's name in parentheses (which may hold spaces): state, ppid, ...;
    # utime and stime are the 14th and 15th fields of the line.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def cpu_seconds(pid: int) -> float:
    """The CPU seconds process ``pid`` has used so far, all its threads."""
    return process_cpu(pid)[1]


def wrk(
    url: str, seconds: float, connections: int, pid: int, headers: Sequence[str] = ()
) -> tuple[float, float]:
    """Load ``url`` with wrk: requests per second, and the CPU seconds per request of process
    ``pid`` (on a shared machine, the steadier of the two: time the server waits for a core is
    not in it). ``headers`` are wrk's ``-H`` values, e.g. ``"traceparent: 00-..."``."""
    cpu_before = cpu_seconds(pid)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    for header in headers:
        command += ["-H", header]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = cpu_seconds(pid) - cpu_before
    if "Non-2xx" in result.stdout:
        raise SystemExit(f"{url} failed:\n{result.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    assert rate is not None and total is not None, result.stdout
    return float(rate.group(1)), cpu / int(total.group(1))


def settings_env(project: Path, **settings: object) -> dict[str, str]:
    """The environment with ``settings`` as the project's variables (``log_level`` ->
    ``MY_SERVICE_LOG_LEVEL``)."""
    package = answer(project, "package_name")
    env = dict(os.environ)
    env.update({f"{package.upper()}_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def http_answers(url: str, expect: str = "") -> bool:
    """Whether ``url`` answers 200 (with ``expect`` in the body, if given)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200 and expect in response.read().decode()
    except (OSError, urllib.error.URLError):
        return False


class Service:
    """A server process (``command``) until the block ends; ready once ``ready()`` says so.

    Its output is discarded: stall reports, frequent with threads under CPU-bound load, would
    garble the table.
    """

    def __init__(
        self,
        command: Sequence[str],
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.ready = ready
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`{' '.join(self.command)}` exited {self.process.returncode}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"`{' '.join(self.command)}` did not become ready within 60 s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
