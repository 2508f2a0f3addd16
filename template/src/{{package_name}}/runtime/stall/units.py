"""What the stall watchdog watches: the event loop, or one sync handler, as a :class:`Unit`;
and a stretch of its work that went on too long, as an :class:`Ended` stall to report.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .probes import Scheduling, Snapshot, cpu_clock

LOOP = "event_loop"
HANDLER = "handler"
PROCESS = "process"

Fields = dict[str, object]  # of a log event
Stack = list[str]  # "file:line in function", outermost first
Window = tuple[float, float]  # (start, end), monotonic seconds

# ``watch``: (watchdog, unit) of the handler running on this thread; ``clock``: its CPU clock
this_thread = threading.local()


def _thread_clock() -> int | None:
    """The calling thread's CPU clock, looked up once per thread."""
    clock: int | None = getattr(this_thread, "clock", None)
    if clock is None:
        clock = this_thread.clock = cpu_clock(threading.get_ident())
    return clock


class Unit:
    """Something the watchdog watches, on the thread that creates it: the event loop, or one
    sync RPC. A plain class with slots, not a dataclass: one is made for every sync RPC."""

    __slots__ = (
        "baseline",
        "clock",
        "cpu_start",
        "fields",
        "generation",
        "kind",
        "name",
        "reported",
        "since",
        "stack",
        "started",
        "task",
        "thread_id",
    )

    def __init__(self, kind: str, name: str, fields: Fields) -> None:
        self.kind = kind
        self.name = name
        self.fields = fields
        self.thread_id = threading.get_ident()
        self.clock = _thread_clock()  # the thread's CPU clock
        self.started = time.monotonic()  # start of the current stretch of work
        self.cpu_start = time.thread_time()  # the thread's CPU time then
        # From when on a lack of progress counts and a stall is judged: a handler's start, the
        # loop's next beat (idling before it, a resting loop would dilute the stall's share of
        # CPU; from then on it surely ran no callback). CPU time counts from ``started``.
        self.since = self.started
        self.generation = 0  # bumped on every sign of progress, so late captures are discarded
        self.reported = False
        self.stack: Stack | None = None
        self.task: Fields = {}
        self.baseline: Snapshot | None = None

    def ended(self, now: float, took: float, cpu: float) -> Ended:
        """The stretch of work ending now, as a stall to report (judged from ``since``)."""
        request = {**self.task, **self.fields}
        return Ended(
            self, self.since, now, took, cpu - self.cpu_start, self.stack, request, self.baseline
        )

    def moved(self) -> None:
        """A sign of progress: captures still under way are discarded."""
        self.generation += 1
        self.reported, self.stack, self.baseline = False, None, None


@dataclass
class Ended:
    """One stall that is over, waiting to be classified and reported by the watchdog thread."""

    unit: Unit
    started: float
    ended: float
    duration: float
    cpu: float
    stack: Stack | None
    task: Fields
    baseline: Snapshot | None
    # Handlers: the thread's scheduler counts so far, read at the end (it may be gone later).
    scheduling: Scheduling | None = None
    # A handler that used little CPU, over while another thread held the GIL: a stall only if
    # it was waiting for the GIL, else a slow handler.
    slow: bool = False
