"""Stall detection: name what blocks the event loop (or a sync handler), and why.

:class:`StallWatchdog` watches; :mod:`.causes` says what a stall was; :mod:`.probes` reads the
clocks that tell the causes apart; :mod:`.dumpfile` keeps faulthandler's stacks for stalls no
Python thread could see; :mod:`.tasks` finds the request a blocked loop was serving.
"""

from .causes import Cause
from .watchdog import StallWatchdog, waiting

__all__ = ["Cause", "StallWatchdog", "waiting"]
