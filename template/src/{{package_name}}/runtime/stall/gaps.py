"""When the watchdog thread itself was held up, and by what.

A tick that comes late is a :class:`Gap`. How late it was splits into time in which the
process ran (another thread held the GIL, or the watchdog queued for a CPU) and time in which
nothing of the process ran at all (SIGSTOP, a frozen container, CPU throttling): only the
watchdog's own scheduler counts (:class:`OwnWaits`) tell the two apart.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter

from .probes import KernelFile, Scheduling, scheduling

NOTICEABLE_GAP = 0.02  # seconds late beyond which a watchdog wake-up counts as held up


@dataclass(frozen=True)
class Gap:
    """A stretch in which the watchdog thread was held up (``late`` seconds past its tick)."""

    end: float
    late: float
    paused: float  # of ``late``, seconds in which the process used no CPU at all
    # Of ``late``, seconds the watchdog waited for the GIL: neither paused nor waiting for a CPU
    # (on a crowded machine the watchdog queues for one like any thread, and no GIL holder is
    # to blame for that).
    held: float


PAUSED: Callable[[Gap], float] = attrgetter("paused")
HELD: Callable[[Gap], float] = attrgetter("held")


def within(gaps: Iterable[Gap], start: float, end: float, part: Callable[[Gap], float]) -> float:
    """Seconds of the gaps' ``part`` (:data:`PAUSED`, :data:`HELD`) between ``start`` and
    ``end``, each gap's part taken to be spread evenly over it."""
    return sum(_overlap(gap, start, end) * part(gap) / gap.late for gap in gaps)


def _overlap(gap: Gap, start: float, end: float) -> float:
    """Seconds of ``gap``'s lateness that fall between ``start`` and ``end``."""
    return max(0.0, min(gap.end, end) - max(gap.end - gap.late, start))


class OwnWaits:
    """The watchdog thread's own scheduler counts, read once per tick. A thread waiting for
    the GIL wakes up every switch interval to ask for it; one waiting for a CPU is counted as
    queued: both mean the process ran. After SIGSTOP (or a frozen container) neither moved: only
    then is the watchdog's lateness a pause. Other threads' counters cannot say this: on a
    crowded machine many queue for a CPU once the process resumes, and would hide the pause."""

    def __init__(self, stat: KernelFile | None) -> None:
        self._stat = stat
        self._last: tuple[float, Scheduling] | None = None

    def read(self) -> tuple[float, float]:
        """Seconds spent waiting for the GIL or a CPU (or running) since the last reading, and
        of those, waiting for a CPU."""
        reading = scheduling(self._stat) if self._stat is not None else None
        if reading is None:
            return 0.0, 0.0
        cpu = time.thread_time()
        last, self._last = self._last, (cpu, reading)
        if last is None:
            return 0.0, 0.0
        last_cpu, before = last
        asked = (reading.wakeups - before.wakeups) * sys.getswitchinterval()
        queued = reading.queued - before.queued
        return (cpu - last_cpu) + queued + asked, queued
