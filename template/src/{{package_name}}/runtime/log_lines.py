"""Log lines on their way to stdout, written in batches rather than a system call each.

:mod:`.logging` renders the lines; this module keeps them until they are written. Debug and
info lines wait up to ``FLUSH_INTERVAL`` seconds; a warning or an error goes out at once, with
every line before it. The access log writes a line for every request, and this is what keeps
that cheap.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TextIO

from prometheus_client import Counter

FLUSH_INTERVAL = 0.1  # seconds an info line may wait in the buffer


class LineBuffer:
    """Log lines on their way to a stream, written in batches.

    ``write`` keeps a line; ``flush`` writes what is kept in one call. A thread flushes
    ``FLUSH_INTERVAL`` seconds after a line starts to wait (and sleeps while none does), and so
    do the exit of the process and a fork (else the child would write the parent's lines
    again); a worker process flushes after each call. What a ``SIGKILL`` or a crash of the
    interpreter interrupts is lost, at most ``FLUSH_INTERVAL`` seconds of debug and info
    lines: warnings and errors are flushed as they are written (:class:`BufferedLogger`).

    It is the stream of the standard library's handler too: its ``flush`` after every record
    keeps those records in order with the service's own lines.

    A write that fails (a closed or broken stdout) loses its batch and nothing else: like the
    standard library's handlers, the buffer never raises into the code that logged (a request,
    the stall watchdog), and its thread goes on flushing. ``log_lines_lost_total`` counts the
    lines lost; stderr gets a line when writing starts to fail and when it works again.
    """

    def __init__(self) -> None:
        self.stream: TextIO = sys.stdout
        self._flusher: threading.Thread | None = None
        self._lost = 0  # lines lost since writing last worked
        self._start_empty()
        os.register_at_fork(before=self.flush, after_in_child=self._start_empty)

    def use(self, stream: TextIO) -> None:
        """Write to ``stream`` from now on (what is kept goes to the previous one first)."""
        self.flush()
        self.stream = stream
        if self._flusher is None:
            self._start_flusher()

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_often, name="log-flush", daemon=True)
        self._flusher.start()

    def _start_empty(self) -> None:
        """No lines and new locks: at first, and in a forked child (another thread may have
        held the parent's locks as it forked, and nothing would release them there), which
        also gets a flushing thread of its own.
        """
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._waiting = threading.Event()  # set while lines wait to be written
        if self._flusher is not None:
            self._start_flusher()

    def write(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            if len(self._lines) == 1:
                self._waiting.set()

    def flush(self) -> None:
        # The lines are taken under one lock and written under another: a request's thread
        # adding a line does not wait for a write to a slow pipe, and batches keep their order.
        with self._writing:
            with self._lock:
                lines, self._lines = self._lines, []
                self._waiting.clear()
            if lines:
                self._write(lines)

    def _write(self, lines: list[str]) -> None:
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError) as error:  # ValueError: the stream was closed
            LOG_LINES_LOST.inc(len(lines))
            if not self._lost:
                _tell_stderr(f"log lines lost: writing them failed ({error!r})")
            self._lost += len(lines)
            return
        if self._lost:
            _tell_stderr(f"log lines written again, after {self._lost} lost")
            self._lost = 0

    def unwritten(self) -> str:
        """The lines kept but not yet written, read without the lock: for a signal handler
        about to end the process at once, whose interrupted thread may hold it.
        """
        return "".join(self._lines)

    def _flush_often(self) -> None:
        # Asleep while nothing waits: an idle service has no wake-ups for its logs.
        while True:
            self._waiting.wait()
            time.sleep(FLUSH_INTERVAL)
            self.flush()


LOG_LINES_LOST = Counter(
    "log_lines_lost", "Log lines the service could not write (its output failed or was closed)."
)


def _tell_stderr(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr may have gone the same way
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


# The process's one buffer. At exit, the standard library's logging flushes its handler,
# whose stream this is.
LINES = LineBuffer()
flush_logs = LINES.flush
unwritten_lines = LINES.unwritten


class BufferedLogger:
    """structlog's logger: one line per event into a :class:`LineBuffer`, flushed at once
    from warning level up. ``name`` is what ``add_logger_name`` puts in each line.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        LINES.write(message + "\n")

    def flushed(self, message: str) -> None:
        LINES.write(message + "\n")
        LINES.flush()

    debug = info = log = msg
    warn = warning = err = error = critical = exception = fatal = failure = flushed
