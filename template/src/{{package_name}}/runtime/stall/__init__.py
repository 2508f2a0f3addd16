"""Stall detection: name what blocks the event loop (or a sync handler), and why.

:class:`StallWatchdog` watches; :mod:`.causes` says what a stall was (running Python, C code
holding the GIL, a system call, waiting for the GIL, a paused process, garbage collection);
:mod:`.probes` reads the clocks that tell them apart; :mod:`.dumpfile` keeps faulthandler's
stacks for stalls no Python thread could see; :mod:`.tasks` finds the request a blocked loop
was serving. docs/runtime/stall-detection.md has the runbook.
"""

from .causes import Cause
from .watchdog import StallWatchdog, waiting

__all__ = ["Cause", "StallWatchdog", "waiting"]
