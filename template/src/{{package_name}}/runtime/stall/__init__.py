"""Stall detection: name what blocks the event loop (or a sync handler), and why.

:class:`StallWatchdog` watches the loop and sync handlers (:mod:`.units`); :mod:`.diagnosis`
says what a stall was, with :mod:`.causes` as its rules, from the clocks :mod:`.probes` reads
and the watchdog's own delays (:mod:`.gaps`); :mod:`.dumpfile` keeps faulthandler's stacks for
stalls no Python thread could see; :mod:`.tasks` finds the request a blocked loop was serving.
"""

from .causes import Cause
from .watchdog import StallWatchdog, waiting

__all__ = ["Cause", "StallWatchdog", "waiting"]
