"""The service as a program, plus a thread that holds the GIL for good once a file appears.

``python tests/gil_hang.py`` with ``GIL_HANG_TRIGGER=<file>`` runs ``python -m <package>``
unchanged until ``<file>`` exists; then C code (a regex that backtracks for longer than the
universe has existed) holds the GIL: a hang no Python code can see or end. The liveness tests
prove the probe the manifests use fails while it lasts.
"""

from __future__ import annotations

import os
import re
import runpy
import threading
import time
from pathlib import Path

from conftest import PACKAGE, ServiceProcess

PROGRAM = Path(__file__).resolve()
# The Kubernetes manifest's livenessProbe timeoutSeconds.
PROBE_TIMEOUT = 3.0


class HangingService(ServiceProcess):
    """The service, run by this module, hanging once ``trigger`` exists."""

    def __init__(self, env: dict[str, str], trigger: Path) -> None:
        self._start([str(PROGRAM)], {**env, "GIL_HANG_TRIGGER": str(trigger)})


def hang_when_triggered(trigger: str) -> None:
    while not os.path.exists(trigger):
        time.sleep(0.05)
    re.compile(r"(a+)+$").match("a" * 64 + "b")


def wait_for_dump(path: Path, function: str, timeout: float = 30.0) -> None:
    """Wait until faulthandler has dumped ``function``'s frame to ``path``: the GIL is held."""
    deadline = time.monotonic() + timeout
    while f"in {function}" not in (path.read_text(encoding="utf-8") if path.exists() else ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"no faulthandler dump of {function} in {path} after {timeout} s")
        time.sleep(0.05)


if __name__ == "__main__":
    trigger = os.environ["GIL_HANG_TRIGGER"]
    threading.Thread(target=hang_when_triggered, args=(trigger,), daemon=True).start()
    runpy.run_module(PACKAGE, run_name="__main__", alter_sys=True)
