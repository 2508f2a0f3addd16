"""What a stall was, and whose stack to show for it, from what the watchdog has recorded.

The watchdog thread records, tick by tick, snapshots of the clocks (:mod:`.probes`), the gaps
in which it was held up itself (:mod:`.gaps`), the stacks faulthandler wrote (:mod:`.dumpfile`)
and the last long garbage collection. :class:`Diagnostician` keeps those records and turns
them, for one stall, into its :class:`~.causes.Cause`, the evidence for it, and the stack to
report (the thread's own, faulthandler's, or the one a collection paused).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from pathlib import Path

from .causes import Cause, Evidence, classify
from .gaps import HELD, PAUSED, Gap, within
from .probes import GcTimer, Probes, Scheduling, Snapshot
from .stacks import culprit, format_stack, outside_the_watchdog, thread_label
from .units import HANDLER, Fields, Stack, Unit, Window

_HISTORY = 32  # snapshots kept: a stall's start is never more than a tick or two back
_GAPS = 32  # watchdog gaps kept


class Diagnostician:
    """The watchdog thread's records, and the diagnosis of a stall from them."""

    def __init__(self, threshold: float, probes: Probes, gc: GcTimer) -> None:
        self.threshold = threshold
        self.probes = probes
        self.gc = gc
        self.history: deque[Snapshot] = deque(maxlen=_HISTORY)
        self.gaps: deque[Gap] = deque(maxlen=_GAPS)
        # faulthandler's stacks: (the watchdog's tick before, when read, stacks by thread)
        self.dumps: deque[tuple[float, float, dict[str, list[str]]]] = deque(maxlen=4)
        self.dump_file: Path | None = None  # where faulthandler writes them
        # The last long collection: when it ended, its thread, and the stack it paused.
        self.collected: tuple[float, int, Stack] | None = None
        self.history.append(probes.take(full=True))

    def snapshot_before(self, moment: float, *, full: bool = False) -> Snapshot:
        """The latest snapshot (``full``: the latest full one) taken at or before ``moment``."""
        for snapshot in reversed(self.history):
            if snapshot.at <= moment and (snapshot.full or not full):
                return snapshot
        return next((s for s in self.history if s.full or not full), self.history[0])

    def held_during(self, start: float, end: float) -> float:
        """Seconds between ``start`` and ``end`` in which the watchdog waited for the GIL."""
        # A copy: a handler thread asks while the watchdog thread may be adding a gap.
        return within(list(self.gaps), start, end, HELD)

    def withheld_since(self, start: float) -> dict[str, float]:
        """CPU the kernel withheld from the process since ``start`` (see :func:`_withheld`)."""
        return _withheld(self.snapshot_before(start, full=True), self.history[-1])

    def diagnose(
        self,
        unit: Unit,
        window: Window,
        cpu: float | None,
        baseline: Snapshot | None,
        counted: Scheduling | None = None,
    ) -> tuple[Cause, Fields]:
        """The class of ``unit``'s stall over ``window``, and the evidence for it. ``cpu`` is the
        thread's CPU time over the window; ``counted``, a handler's scheduler counts at its end."""
        start, end = window
        before = baseline or self.snapshot_before(start)
        before_full = self.snapshot_before(start, full=True)
        after = self.probes.take(full=True)  # rare: only for a stall
        self.history.append(after)
        queued_after, wakeups_after = dict(after.queued), dict(after.wakeups)
        if counted is not None:
            queued_after[unit.thread_id] = counted.queued
            wakeups_after[unit.thread_id] = counted.wakeups
        # The run-queue wait is read only in full snapshots, the latest of which may be ticks
        # before the window: its share in the window is taken to be the share of the thread's
        # CPU time since then that falls in the window (a thread that waits for a CPU has that
        # much more to run). Else the queueing of busy work before a stall would count in it.
        queued = _delta(before_full.queued, queued_after, unit.thread_id)
        ran = _delta(before_full.threads, after.threads, unit.thread_id)
        if cpu is not None and ran > cpu:
            queued *= cpu / ran
        # A handler blocked in a system call while another thread held the GIL was not delayed
        # by it: only one that kept asking for the GIL waited for it. (The loop is overdue, so
        # it wants to run: it is not asked.)
        gil_wait = None
        if unit.kind == HANDLER and unit.thread_id in wakeups_after:
            woken = _delta(before_full.wakeups, wakeups_after, unit.thread_id)
            gil_wait = woken * sys.getswitchinterval()
        withheld = _withheld(before_full, after)
        paused = within(self.gaps, start, end, PAUSED)
        starved = within(self.gaps, start, end, HELD)
        seen = [s for s in self.history if s.at > before.at]  # a thread that has ended since
        holder, other_cpu = _busiest_other(
            (before, before_full), seen, {unit.thread_id, threading.get_ident()}
        )
        gc_time = after.gc - before.gc
        evidence = Evidence(
            wall=end - start,
            thread_cpu=cpu,
            thread_queued=queued,
            paused=max([paused, *withheld.values()]),
            gil_starved=starved,
            gc=gc_time,
            other_cpu=other_cpu,
            threshold=self.threshold,
            thread_gil_wait=gil_wait,
        )
        cause = classify(evidence)
        extra: Fields = {
            # Where the time went, in seconds: what the class was decided on.
            "evidence": {
                "cpu": None if cpu is None else round(cpu, 3),
                "cpu_wait": round(queued, 3),
                "paused": round(evidence.paused, 3),
                "gil_starved": round(starved, 3),
                "gc": round(gc_time, 3),
                "other_thread_cpu": round(other_cpu, 3),
                **({} if gil_wait is None else {"gil_wait": round(gil_wait, 3)}),
            }
        }
        if cause is Cause.GIL_WAIT and holder is not None:
            extra["gil_holder"] = self.probes.names.get(holder, "?")
            extra["gil_holder_thread"] = thread_label(holder)
        if cause is Cause.GC:
            extra["gc_seconds"] = round(gc_time, 3)
            extra["gc_generation"] = self.gc.generation
        if cause is Cause.PAUSED:
            extra.update({key: round(value, 3) for key, value in withheld.items()})
        return cause, extra

    def stack_for(
        self, unit: Unit, cause: Cause, sampled: Stack | None, window: Window, extra: Fields
    ) -> Stack | None:
        """The stack to report: the one a collection paused on this thread; else, if the GIL
        was held, faulthandler's from during the stall (one sampled afterwards would show where
        the thread went next); else ``sampled``. Adds the stack and culprit of another thread
        to blame (the GIL holder, the collecting thread) to ``extra``.
        """
        start, end = window
        dumps = [stacks for begun, done, stacks in self.dumps if begun < end and done > start]
        dumped = dumps[-1] if dumps else None
        collected = self._collection_during(start, end) if cause is Cause.GC else None
        stack = sampled
        extra["stack_source"] = "sampled" if sampled is not None else None
        if collected is not None and collected[0] == unit.thread_id:
            stack = collected[1]
            extra["stack_source"] = "collection"
        elif dumped is not None and cause in (Cause.C_CODE, Cause.GC, Cause.GIL_WAIT):
            stack = dumped.get(thread_label(unit.thread_id), sampled)
            extra["stack_source"] = "faulthandler"
            extra["faulthandler_file"] = str(self.dump_file) if self.dump_file else None
        if collected is not None and collected[0] != unit.thread_id:
            # Any thread's allocation may start a collection, which holds the GIL throughout.
            extra["gc_thread"] = thread_label(collected[0])
            extra["gc_thread_name"] = self.probes.names.get(collected[0], "?")
            extra["gc_stack"] = collected[1]
            extra["culprit_elsewhere"] = culprit(collected[1])
        if cause is Cause.GIL_WAIT and "gil_holder_thread" in extra:
            holder_stack = (dumped or {}).get(str(extra["gil_holder_thread"]), [])
            extra["gil_holder_stack"] = holder_stack
            extra["culprit_elsewhere"] = culprit(holder_stack)
        return stack

    def _collection_during(self, start: float, end: float) -> tuple[int, Stack] | None:
        """The thread of a collection in the window and the stack it paused there: the last
        long one if it ended in the window, or one still running. (A collection's callbacks
        are Python code, and its thread may let go of the GIL in the one at its end.)"""
        thread = self.gc.thread
        if self.gc.started is not None and thread is not None:
            running = outside_the_watchdog(sys._current_frames().get(thread))
            return thread, format_stack(running)
        if self.collected is None:
            return None
        at, thread, stack = self.collected
        return (thread, stack) if start <= at <= end else None


def _delta(before: dict[int, float], after: dict[int, float], ident: int) -> float:
    """How far ``ident``'s reading moved (a thread that started in between: all of it)."""
    return after[ident] - before.get(ident, 0.0) if ident in after else 0.0


def _withheld(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU the kernel withheld between two snapshots: cgroup throttling, hypervisor steal."""
    found = {}
    if before.throttled is not None and after.throttled is not None:
        found["throttled"] = after.throttled - before.throttled
    if before.steal is not None and after.steal is not None:
        found["steal"] = after.steal - before.steal
    return found


def _busiest_other(
    before: tuple[Snapshot, Snapshot], since: list[Snapshot], excluded: set[int]
) -> tuple[int | None, float]:
    """The thread (not in ``excluded``) that ran, or wanted to, the most since ``before`` (the
    latest snapshot then, and the latest full one), by its last reading in the snapshots
    ``since`` (so a thread that has ended since still counts)."""
    clocks, counts = before
    threads: dict[int, float] = {}
    queued: dict[int, float] = {}
    for snapshot in since:
        threads.update(snapshot.threads)
        queued.update(snapshot.queued)
    busiest, most = None, 0.0
    for ident in threads.keys() - excluded:
        used = _delta(clocks.threads, threads, ident)
        used += _delta(counts.queued, queued, ident)
        if used > most:
            busiest, most = ident, used
    return busiest, most
