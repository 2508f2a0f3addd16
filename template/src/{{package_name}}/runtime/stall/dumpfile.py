"""The file faulthandler writes stacks to when the watchdog cannot run (the GIL is held).

While C code holds the GIL only faulthandler's own C thread can still write, and only raw text
to a file descriptor: to a file the service owns (on stderr, log pipelines would split it into
unrelated lines), once per stall. The watchdog reads each new dump back for the stall report.
The file is never emptied under faulthandler (a dump written meanwhile would be lost): past a
limit a fresh one replaces it. A dump nobody has read is the stack of a hang that never ended.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import tempfile
from pathlib import Path

from .stacks import parse_faulthandler_dump

_PACKAGE = __name__.split(".", 1)[0]
_REPLACE_AFTER = 1 << 20  # bytes of dumps read from one file before a fresh one replaces it


def default_dump_path() -> Path:
    """``<temp dir>/<package>-stall-<pid>.txt``: one file per process."""
    return Path(tempfile.gettempdir()) / f"{_PACKAGE}-stall-{os.getpid()}.txt"


class DumpFile:
    """faulthandler's timer, pointed at ``path``, kept armed by the watchdog. Arming starts a
    C thread (a tenth of a millisecond): the watchdog re-arms every ``period`` seconds, not every
    tick, so a thread holding the GIL is dumped between ``after`` and ``after + period`` in."""

    def __init__(self, path: Path, after: float, period: float) -> None:
        self.path = path
        self.period = period
        self.latest = round(after + period, 3)  # the most seconds into a GIL hold before a dump
        self._armed_at = float("-inf")
        self._fd = self._create(path)
        self._read = 0  # bytes of the file already taken

    def arm(self, now: float, *, force: bool = False) -> None:
        """Dump every thread's stack ``latest`` seconds from now, unless re-armed sooner. Once
        the timer has run out (it wrote a dump), nothing is armed until this is called: call it
        as soon as the watchdog runs again. Re-arming waits for a dump in progress to finish.
        """
        if force or now - self._armed_at >= self.period:
            faulthandler.dump_traceback_later(self.latest, repeat=False, file=self._fd)
            self._armed_at = now

    def take(self, now: float) -> dict[str, list[str]] | None:
        """The stacks of the dumps written since the last call (of the last one, if several)."""
        if os.fstat(self._fd).st_size <= self._read:
            return None
        written = self._fd
        if self._read >= _REPLACE_AFTER:
            with contextlib.suppress(OSError):  # if not, the file grows on
                self._fd = self._create(self.path)
        # On the fresh file if there is one; a dump still being written is finished first.
        self.arm(now, force=True)
        data = os.pread(written, os.fstat(written).st_size - self._read, self._read)
        if written == self._fd:
            self._read += len(data)
        else:
            os.close(written)
            self._read = 0
        return parse_faulthandler_dump(data.decode("utf-8", "replace"))

    @staticmethod
    def _create(path: Path) -> int:
        """An empty file at ``path``, put in place atomically (a reader never sees it half)."""
        fresh = path.with_name(f".{path.name}.new")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.replace(fresh, path)
        return fd

    def close(self) -> None:
        """Disarm; remove the file unless it holds a dump nobody has read."""
        faulthandler.cancel_dump_traceback_later()
        unread = os.fstat(self._fd).st_size > self._read
        os.close(self._fd)
        if not unread:
            self.path.unlink(missing_ok=True)
