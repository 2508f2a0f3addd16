"""SIGTERM and SIGINT: the first asks the service to drain, a second ends it at once.

SIGUSR1 writes every thread's stack to stderr (faulthandler), at any time, even mid-stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future
from types import FrameType
from typing import Any

from .log_lines import unwritten_lines


class Signals:
    """SIGTERM/SIGINT: the first sets :attr:`received`; a second exits at once.

    Plain ``signal.signal`` handlers, which Python runs on the main thread between two
    bytecodes: they run even while the event loop is stuck in Python code, which a loop's own
    signal callbacks would wait for. The kernel may deliver a signal to any thread, though, and
    a main thread asleep in a lock would not notice; so the main thread sleeps in ``select()``
    on the signal wakeup socket instead (:meth:`wait`), and an event loop watches that socket.
    """

    def __init__(self) -> None:
        self.received = threading.Event()
        self.name: str | None = None
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Take over the shutdown signals and the stack dump signal; call on the main thread."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)
        # `kill -USR1 <pid>` writes every thread's stack to stderr, at any time, even mid-stall.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        if loop is not None:
            loop.add_reader(self._reader.fileno(), self._drain)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.name is not None:
            _exit_now(name, 128 + signum)
        self.name = name
        self.received.set()

    def wait(
        self, event: threading.Event | Future[Any] | None, timeout: float | None = None
    ) -> bool:
        """Block until ``event`` is set (the future done); ``False`` after ``timeout`` seconds.

        On the main thread, a signal wakes it wherever the kernel delivered it, so that its
        handler runs at once; whoever sets ``event`` wakes it the same way. ``None``: sleep.
        """
        if isinstance(event, Future):
            done = threading.Event()
            event.add_done_callback(lambda _: self._wake(done))
            event = done
        elif event is not None and event is not self.received:
            threading.Thread(target=self._wake_on, args=(event, timeout), daemon=True).start()
        event = event or threading.Event()
        if threading.current_thread() is not threading.main_thread():
            return event.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not event.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            select.select([self._reader], [], [], left)
            self._drain()
        return True

    def _wake_on(self, event: threading.Event, timeout: float | None) -> None:
        event.wait(timeout)
        self._wake()

    def _wake(self, event: threading.Event | None = None) -> None:
        if event is not None:
            event.set()
        with contextlib.suppress(OSError):  # full: the main thread is awake already
            self._writer.send(b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):  # raised once nothing is left to read
            while self._reader.recv(512):
                pass


def _exit_now(name: str, status: int) -> None:
    """Leave immediately: no drain, no cleanup; the log's last lines written without locks."""
    event = {"event": "shutdown_forced", "level": "warning", "signal": name}
    line = json.dumps(event, separators=(",", ":"))
    os.write(sys.stdout.fileno(), (unwritten_lines() + line + "\n").encode())
    os._exit(status)
