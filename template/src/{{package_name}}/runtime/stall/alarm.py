"""A kernel timer that lets a blocked event loop say which task it is blocked in.

C code that holds the GIL keeps the watchdog thread out until it returns, and the loop may
then finish the task's step before the watchdog gets to ask which task it was. A signal needs
no GIL: the loop re-arms ``ITIMER_REAL`` at every heartbeat, for when the next beat is a
threshold late, and Python runs the ``SIGALRM`` handler on the main thread at its next chance,
still inside the blocked step (the regex engine even checks for signals while it backtracks).

Only for a loop on the main thread (Python runs signal handlers nowhere else), and only while
nothing else claims ``SIGALRM`` (the process has one such timer): code that installs its own
handler later gets the signal to itself from then on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import ClassVar

_AVAILABLE = hasattr(signal, "setitimer")  # not on Windows


class LoopAlarm:
    """``on_alarm`` runs on the main thread whenever the armed moment passes."""

    # SIGALRM and its timer are the process's: one alarm holds them at a time.
    _holder: ClassVar[LoopAlarm | None] = None

    def __init__(self, on_alarm: Callable[[], None]) -> None:
        self._on_alarm = on_alarm
        self.installed = False

    def install(self) -> str | None:
        """Take ``SIGALRM`` (on the main thread); the reason it is not taken, or None."""
        if not _AVAILABLE:
            return "this platform has no interval timers"
        if threading.current_thread() is not threading.main_thread():
            return "the event loop does not run on the main thread"
        # The handler an alarm left behind (uninstalled off the main thread) is taken over.
        if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, LoopAlarm._handle):
            return "SIGALRM has a handler already"
        signal.signal(signal.SIGALRM, LoopAlarm._handle)
        # System calls the signal interrupts are resumed, not failed with EINTR.
        signal.siginterrupt(signal.SIGALRM, False)
        LoopAlarm._holder, self.installed = self, True
        return None

    def arm(self, seconds: float) -> None:
        """Fire ``seconds`` from now (replacing the moment armed before). If other code has
        taken ``SIGALRM`` since, the alarm stands aside for good: the timer is theirs too."""
        if not self.installed:
            return
        if signal.getsignal(signal.SIGALRM) is not LoopAlarm._handle:
            self.installed = False
            return
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def uninstall(self) -> None:
        """Disarm and give ``SIGALRM`` back. Off the main thread the handler cannot be given
        back: it stays, doing nothing, until the next alarm takes it over."""
        if not self.installed:
            return
        self.installed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        if LoopAlarm._holder is self:
            LoopAlarm._holder = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, signal.SIG_DFL)

    @staticmethod
    def _handle(_signum: int, _frame: FrameType | None) -> None:
        holder = LoopAlarm._holder
        if holder is not None:
            holder._on_alarm()
