"""Where two servers spend their CPU under the same load, by Python function: Linux perf.

cProfile makes every Python call dearer, and it sees one process's functions by the time they
take, not by what they cost among the server's threads: the thread-pool gRPC server's handler
threads and its polling thread take the GIL from each other, and what a function costs there
can be several times what it costs called alone. perf samples the CPUs without touching the
processes. Python 3.12 and later, started with ``PYTHONPERFSUPPORT=1`` (:data:`SERVER_ENV`),
show their functions to it (``py::<name>:<file>`` frames), and with DWARF call graphs each
sample is charged to the innermost Python function on its thread's stack, the C code that
function called included. Samples of threads with no Python on their stack (grpcio's event
engine, say) are charged to the thread's name.

    profile = SystemProfile()
    with profile.recording():                  # perf record -a, for the block
        ... load both servers alike ...        # (as often as needed: each block is kept)
    counts = profile.by_function({pid_a, ...}, {pid_b, ...})
    print_comparison(counts, ("generated", "bare"), 20, served=(requests_a, requests_b))

Needs perf (Debian's linux-perf: ``scripts/debian-tools.sh linux-perf``) and the right to
profile every CPU (root, or ``kernel.perf_event_paranoid`` at most 0).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SERVER_ENV = {"PYTHONPERFSUPPORT": "1"}
# Where a sample's function lives (``grpc``, the service's package, ``python``) and its name.
Frame = tuple[str, str]
FREQUENCY = 300  # samples a second per CPU: DWARF stacks are copied whole, 16 KiB each

_NO_PYTHON = "[no Python frame]"
# "python 20903/20910" opens a sample; its frames follow, innermost first.
_SAMPLE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s*$")


def unavailable() -> str | None:
    """Why perf cannot profile here, or ``None`` if it can."""
    if shutil.which("perf") is None:
        return "perf is not installed (scripts/debian-tools.sh linux-perf)"
    probe = subprocess.run(
        ["perf", "record", "-e", "cpu-clock", "-a", "-o", "/dev/null", "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines() or ["(no output)"]
        return f"perf cannot record every CPU: {lines[0]}"
    return None


class SystemProfile:
    """``perf record`` of every CPU: a file for each recorded block, so that what happens
    between blocks (a server starting, its imports) is left out. The files are in a temporary
    directory of the profile's own, removed with it."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="perf-samples-")
        self.files: list[Path] = []

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record every CPU while the block runs (perf takes a moment to start)."""
        data = Path(self._directory.name) / f"perf-{len(self.files)}.data"
        command = ["perf", "record", "-e", "cpu-clock", "-F", str(FREQUENCY),
                   "--call-graph", "dwarf,16384", "-a", "-q", "-o", str(data)]  # fmt: skip
        perf = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            perf.send_signal(signal.SIGINT)  # perf writes its data and exits
            perf.wait(timeout=120)
            self.files.append(data)

    def by_function(self, *groups: Iterable[int]) -> list[Counter[Frame]]:
        """For each group of process ids, its samples by innermost Python function."""
        wanted = [set(group) for group in groups]
        counts: list[Counter[Frame]] = [Counter() for _ in wanted]
        for data in self.files:
            script = subprocess.Popen(
                ["perf", "script", "-i", str(data), "-F", "comm,pid,tid,ip,sym"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert script.stdout is not None
            for pid, frame in _samples(script.stdout):
                for group, count in zip(wanted, counts, strict=True):
                    if pid in group:
                        count[frame] += 1
            script.wait()
        return counts


def _samples(lines: Iterable[str]) -> Iterable[tuple[int, Frame]]:
    """(process id, innermost Python function, or the thread's name if none) of each sample."""
    pid, thread, frame = None, "", None
    for line in lines:
        header = _SAMPLE.match(line)
        if header is not None:
            if pid is not None:
                yield pid, frame or (_NO_PYTHON, f"thread {thread}")
            pid, thread, frame = int(header["pid"]), header["comm"], None
        elif frame is None and "py::" in line:
            name, _, where = line.split("py::", 1)[1].strip().partition(":")
            frame = (_origin(where), f"{name} ({Path(where).name})")
    if pid is not None:
        yield pid, frame or (_NO_PYTHON, f"thread {thread}")


def _origin(path: str) -> str:
    """Where a function's file lives: its distribution's package (``grpc``, ``fastapi``, the
    service's own), ``python`` for the standard library, else the file's folder (``bare``)."""
    parts = Path(path).parts
    for marker in ("site-packages", "src"):
        if marker in parts[:-2]:
            return parts[parts.index(marker) + 1]
    if len(parts) < 2 or any(part.startswith("python3") for part in parts):
        return "python"
    return parts[-2]


def print_comparison(
    counts: Sequence[Counter[Frame]], names: tuple[str, str], top: int, served: tuple[int, int]
) -> None:
    """The functions whose samples differ most between two groups of servers, per request:
    ``served`` says how many requests each group served while recorded, and the second
    group's samples are scaled to the first's number. Each difference is also given as a
    share of the second group's samples (of its server CPU)."""
    first, raw = counts
    scale = served[0] / max(1, served[1])
    second = Counter({frame: round(n * scale) for frame, n in raw.items()})
    base = max(1, sum(second.values()))
    if all(origin == _NO_PYTHON for origin, _ in first):
        print("perf saw no Python functions: run the servers on Python 3.12 or later")
    print(
        f"{names[0]}: {sum(first.values()):,} samples in {served[0]:,} requests; {names[1]}: "
        f"{base:,} in as many ({sum(first.values()) / base:.2f}x); by the innermost Python "
        "function on the stack:"
    )
    origins: list[Counter[str]] = [Counter(), Counter()]
    for count, by_origin in zip((first, second), origins, strict=True):
        for (origin, _), n in count.items():
            by_origin[origin] += n
    ordered = sorted(
        origins[0].keys() | origins[1].keys(), key=lambda o: origins[1][o] - origins[0][o]
    )
    differences = (f"{origin} {origins[0][origin] - origins[1][origin]:+d}" for origin in ordered)
    print(f"by where the code lives: {', '.join(differences)}")
    print(f"{'difference':>10} {names[0]:>10} {names[1]:>10}  function")
    ranked = sorted(first.keys() | second.keys(), key=lambda f: second[f] - first[f])
    shown = ranked[:top] + [frame for frame in ranked[-3:] if frame not in ranked[:top]]
    for frame in shown:
        extra = first[frame] - second[frame]
        origin, function = frame
        print(
            f"{extra:+6d} {extra / base:+4.0%} {first[frame]:10d} {second[frame]:10d}"
            f"  {origin}: {function}"
        )
