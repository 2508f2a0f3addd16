"""The file faulthandler writes stacks to when the watchdog cannot run (the GIL is held).

While C code holds the GIL no Python thread runs, the watchdog included; only faulthandler's
own C thread can still write, and only raw text to a file descriptor. It writes to a file the
service owns (not stderr, where log pipelines would split it into unrelated lines): once per
stall, since the watchdog is not there to re-arm it. When the watchdog runs again it reads the
dump back, turns it into structured stacks for the stall report and empties the file. A dump
that stays in the file is the stack of a hang that never ended.
"""

from __future__ import annotations

import faulthandler
import os
import tempfile
from pathlib import Path

from .stacks import parse_faulthandler_dump

_PACKAGE = __name__.split(".", 1)[0]


def default_dump_path() -> Path:
    """``<temp dir>/<package>-stall-<pid>.txt``: one file per process."""
    return Path(tempfile.gettempdir()) / f"{_PACKAGE}-stall-{os.getpid()}.txt"


class DumpFile:
    """faulthandler's timer, pointed at ``path``, kept armed by the watchdog.

    Arming starts a C thread, which costs about a tenth of a millisecond: the watchdog re-arms
    every ``period`` seconds, not on every tick, with a timeout of ``after + period``. A thread
    holding the GIL is therefore dumped between ``after`` and ``after + period`` seconds in.
    """

    def __init__(self, path: Path, after: float, period: float) -> None:
        self.path = path
        self.after = after
        self.period = period
        self._armed_at = float("-inf")
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    @property
    def latest(self) -> float:
        """The most seconds into a GIL hold before its dump is written."""
        return round(self.after + self.period, 3)

    def arm(self, now: float, *, force: bool = False) -> None:
        """Dump every thread's stack ``latest`` seconds from now, unless re-armed sooner.

        Re-arming first waits for a dump in progress to finish, so :meth:`take` right after a
        forced re-arm never reads half a dump.
        """
        if force or now - self._armed_at >= self.period:
            faulthandler.dump_traceback_later(self.latest, repeat=False, file=self._fd)
            self._armed_at = now

    def take(self, now: float) -> dict[str, list[str]] | None:
        """The stacks of a dump written since the last call (then the file is emptied)."""
        if os.fstat(self._fd).st_size == 0:
            return None
        self.arm(now, force=True)  # waits for the dump being written, if it still is
        size = os.fstat(self._fd).st_size
        text = os.pread(self._fd, size, 0).decode("utf-8", "replace")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        return parse_faulthandler_dump(text)

    def close(self) -> None:
        """Disarm; remove the file unless it holds a dump nobody has read."""
        faulthandler.cancel_dump_traceback_later()
        empty = os.fstat(self._fd).st_size == 0
        os.close(self._fd)
        if empty:
            self.path.unlink(missing_ok=True)
