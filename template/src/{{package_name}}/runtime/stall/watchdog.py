"""The stall watchdog: one daemon thread that watches the event loop and sync handlers.

A heartbeat on the loop stamps when it was last alive; each sync RPC is watched while it runs.
The watchdog thread wakes every ``tick``, reports a unit stuck for longer than the threshold
as ``stall_detected`` while it is, and once it moves again as ``event_loop_stalled`` or
``handler_stalled`` (or ``process_paused``, blaming no code). A handler is judged by its
thread's CPU time (one that waits is only ``handler_slow``), the loop by wall time. While C
code holds the GIL, faulthandler (:mod:`.dumpfile`) writes the stacks the watchdog cannot take.
docs/runtime/stall-detection.md has the details.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from ..logging import get_logger
from ..metrics import EVENTLOOP_LAG, LAG_WINDOW, SLOW_HANDLERS, STALL_DURATION, STALLS
from . import spans, tasks
from .alarm import LoopAlarm
from .causes import Cause, Evidence, classify
from .dumpfile import DumpFile, default_dump_path
from .probes import (
    GcTimer,
    KernelFile,
    Probes,
    Scheduling,
    Snapshot,
    cpu_clock,
    read_clock,
    schedstat,
    scheduling,
)
from .stacks import culprit, format_stack, outside_the_watchdog, thread_label

LOOP = "event_loop"
HANDLER = "handler"
PROCESS = "process"

log = get_logger(__name__)

Fields = dict[str, object]  # of a log event
Stack = list[str]  # "file:line in function", outermost first
Window = tuple[float, float]  # (start, end), monotonic seconds

_HISTORY = 32  # snapshots kept: a stall's start is never more than a tick or two back
_SEGMENTS = 32  # watchdog gaps kept
_NOTICEABLE_GAP = 0.02  # seconds late beyond which a watchdog wake-up counts as held up
_FULL_EVERY = 10  # ticks between full snapshots (see probes.Snapshot)
_IDLE_CPU = 0.02  # share of the time a process or loop may be on CPU and still count as idle


# ``watch``: (watchdog, unit); ``clock``: this thread's CPU clock
_current = threading.local()


def _thread_clock() -> int | None:
    """The calling thread's CPU clock, looked up once per thread."""
    clock: int | None = getattr(_current, "clock", None)
    if clock is None:
        clock = _current.clock = cpu_clock(threading.get_ident())
    return clock


class _Unit:
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

    def ended(self, now: float, took: float, cpu: float) -> _Ended:
        """The stretch of work ending now, as a stall to report (judged from ``since``)."""
        request = {**self.task, **self.fields}
        return _Ended(
            self, self.since, now, took, cpu - self.cpu_start, self.stack, request, self.baseline
        )

    def moved(self) -> None:
        """A sign of progress: captures still under way are discarded."""
        self.generation += 1
        self.reported, self.stack, self.baseline = False, None, None


@dataclass
class _Ended:
    """One stall that is over, waiting to be classified and reported by the watchdog thread."""

    unit: _Unit
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


@dataclass(frozen=True)
class _Gap:
    """A stretch in which the watchdog thread was held up (``late`` seconds past its tick)."""

    end: float
    late: float
    paused: float  # of ``late``, seconds in which the process used no CPU at all
    # Of ``late``, seconds the watchdog waited for the GIL: neither paused nor waiting for a CPU
    # (on a crowded machine the watchdog queues for one like any thread, and no GIL holder is
    # to blame for that).
    held: float


_PAUSED: Callable[[_Gap], float] = attrgetter("paused")
_HELD: Callable[[_Gap], float] = attrgetter("held")


class StallWatchdog:
    """Reports an event loop or handler blocked for longer than ``threshold`` seconds."""

    def __init__(
        self,
        threshold: float,
        *,
        lag_interval: float = 0.1,
        use_faulthandler: bool = True,
        dump_path: Path | None = None,
    ) -> None:
        if threshold <= 0 or lag_interval <= 0:
            raise ValueError("threshold and lag_interval must be positive")
        self.threshold = threshold
        self.lag_interval = lag_interval
        # Every tick costs CPU even when all is well: a quarter of a second keeps the idle cost
        # near 0.1 % of a core, and a stall is still reported within threshold + tick.
        self.tick = max(threshold / 2, 0.25)
        self.rest_interval = max(lag_interval, self.tick)  # the heartbeat of an idle loop
        self._use_faulthandler = use_faulthandler
        self._dump_path = dump_path
        self._dump: DumpFile | None = None
        self._lock = threading.Lock()
        self._loop_unit: _Unit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: set[_Unit] = set()
        self._ended: deque[_Ended] = deque()
        self._stopping = False
        # Held except while someone rings it: the watchdog sleeps by trying to take it. A bare
        # lock's timed acquire is one C call, far cheaper per tick than threading.Event.wait.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._thread: threading.Thread | None = None
        self._gc = GcTimer(threshold / 2, self._note_collection)
        self._alarm = LoopAlarm(self._note_alarmed_task)
        self._probes = Probes(self._gc)
        self._history: deque[Snapshot] = deque(maxlen=_HISTORY)
        self._gaps: deque[_Gap] = deque(maxlen=_SEGMENTS)
        self._dumps: deque[tuple[float, float, dict[str, list[str]]]] = deque(maxlen=4)
        self._pause_reported_until = 0.0
        self._ticks = 0
        self._last_tick = time.monotonic()
        self._last_process_cpu = time.process_time()
        self._peeked: tuple[float, Fields] = (0.0, {})
        # The last long collection: when it ended, its thread, and the stack it paused.
        self._collected: tuple[float, int, Stack] | None = None
        self._own = _Own(None)
        self._history.append(self._probes.take(full=True))

    def start(self) -> None:
        """Start the watchdog thread (idempotent)."""
        if self._thread is not None:
            return
        if self._use_faulthandler:
            path = self._dump_path or default_dump_path()
            after = round(self.threshold + 2 * self.tick, 3)  # then re-armed every 2 ticks
            try:
                self._dump = DumpFile(path, after, 2 * self.tick)
            except OSError as error:
                log.warning("stall_dump_file_unavailable", path=str(path), error=str(error))
        self._gc.install()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)
        self._thread.start()
        log.info(
            "stall_watchdog_started",
            threshold=self.threshold,
            tick=self.tick,
            faulthandler_after=self._dump.latest if self._dump is not None else None,
            faulthandler_file=str(self._dump.path) if self._dump is not None else None,
            watchdog_thread=thread_label(self._thread.ident or 0),
        )

    def stop(self) -> None:
        """Stop watching: report what has ended, end the thread, the heartbeat and the timer."""
        with self._lock:
            self._loop_unit = None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._ring()
        thread.join()
        self._gc.uninstall()
        self._alarm.uninstall()
        if self._dump is not None:
            self._dump.close()
            self._dump = None

    def watch_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (default: the running loop); safe to call from any thread."""
        target = loop if loop is not None else asyncio.get_running_loop()
        target.call_soon_threadsafe(self._first_beat, target)

    def watch_handler(self, name: str, **fields: object) -> AbstractContextManager[None]:
        """Watch the current thread while the block runs (one synchronous RPC, ``name``);
        ``fields`` go into every report, after the request id and trace id bound in this thread.
        """
        request = tasks.current_request()
        return _Watched(self, _Unit(HANDLER, name, {**request, **fields} if fields else request))

    def _add_handler(self, unit: _Unit) -> None:
        with self._lock:
            self._handlers.add(unit)
        _current.watch = (self, unit)

    def _settle(self, unit: _Unit) -> None:
        """Stop watching ``unit`` (on its own thread); report its last stretch if it stalled."""
        now = time.monotonic()
        with self._lock:
            self._handlers.discard(unit)
            reported = unit.reported
            took = now - unit.started
            # Most calls end well within the threshold: nothing to build for them, and not
            # even the thread's CPU clock to read (a system call).
            ended = None
            if reported or took > self.threshold:
                ended = unit.ended(now, took, time.thread_time())
            unit.moved()
        if ended is None:
            return
        slow = not reported and ended.cpu <= self.threshold
        if slow and not self._gil_held_during(ended.started, now):
            self._log_slow(ended)
            return
        # The thread may be gone by the time the watchdog looks: read its counts now.
        stat = schedstat(threading.get_native_id())
        ended.scheduling, ended.slow = scheduling(stat), slow
        stat.close()
        self._hand_over(ended)

    def _gil_held_during(self, start: float, end: float) -> bool:
        """Whether another thread may have held the GIL for a threshold between ``start`` and
        ``end``: the watchdog was kept from running then, or has not run since."""
        if self._thread is None:
            return False
        if end - self._last_tick > self.tick + _NOTICEABLE_GAP:
            return True
        return _within(list(self._gaps), start, end, _HELD) > self.threshold

    def _log_slow(self, ended: _Ended) -> None:
        SLOW_HANDLERS.inc()
        log.info(
            "handler_slow",
            name=ended.unit.name,
            duration=round(ended.duration, 3),
            cpu=round(ended.cpu, 3),
            threshold=self.threshold,
            **ended.unit.fields,
        )

    def _resume(self, unit: _Unit) -> None:
        now = time.monotonic()
        with self._lock:
            unit.started = unit.since = now
            unit.cpu_start = time.thread_time()
            self._handlers.add(unit)

    def _hand_over(self, ended: _Ended) -> None:
        """Report ``ended`` from the watchdog thread (right here if there is none)."""
        if self._thread is None:
            self._report(ended)
            return
        self._ended.append(ended)
        self._ring()

    def _ring(self) -> None:
        """Wake the watchdog thread before its tick is up."""
        with suppress(RuntimeError):  # already rung, not yet answered
            self._bell.release()

    def _first_beat(self, loop: asyncio.AbstractEventLoop) -> None:
        tasks.install_task_factory(loop)
        unit = _Unit(LOOP, LOOP, {})
        unit.since = unit.started + self.lag_interval
        with self._lock:
            self._loop_unit = unit
            self._loop = loop
        LAG_WINDOW.watch(unit.since)
        without_alarm = None if self._alarm.installed else self._alarm.install()
        log.info(
            "stall_watch_loop",
            loop_thread=thread_label(unit.thread_id),
            loop_thread_id=unit.thread_id,
            lag_interval=self.lag_interval,
            task_alarm=without_alarm is None,
            **({"task_alarm_unavailable": without_alarm} if without_alarm else {}),
        )
        self._alarm.arm(self.lag_interval + self.threshold)
        loop.call_later(self.lag_interval, self._beat, loop, unit)

    def _beat(self, loop: asyncio.AbstractEventLoop, unit: _Unit) -> None:
        now, cpu = time.monotonic(), time.thread_time()
        lag = max(0.0, now - unit.since)
        EVENTLOOP_LAG.observe(lag)
        # Waking an idle process costs more than the beat itself: a loop that has done next to
        # nothing since the last beat is looked at only as often as the watchdog thread looks.
        idle = cpu - unit.cpu_start < _IDLE_CPU * (now - unit.started)
        interval = self.rest_interval if idle else self.lag_interval
        with self._lock:
            ended = None
            if unit.reported or lag > self.threshold:
                ended = unit.ended(now, lag, cpu)
            unit.moved()
            unit.started, unit.cpu_start = now, cpu
            unit.since = now + interval
            unit.task = {}
            watching = self._loop_unit is unit
        LAG_WINDOW.beat(lag, now, cpu, unit.since if watching else None)
        if ended is not None:
            self._hand_over(ended)
        if watching:
            self._alarm.arm(interval + self.threshold)
            loop.call_later(interval, self._beat, loop, unit)

    def _run(self) -> None:
        if self._dump is not None:
            self._dump.arm(time.monotonic())
        own_stat = schedstat(threading.get_native_id())
        self._own = _Own(own_stat)
        self._history.append(self._probes.take())
        # Gaps are measured on this thread's clocks, from here.
        self._last_tick, self._last_process_cpu = time.monotonic(), time.process_time()
        self._own.read()
        try:
            while not self._watched_to_the_end():
                pass
        finally:
            own_stat.close()

    def _watched_to_the_end(self) -> bool:
        """Watch until stopped (``True``); ``False`` after an error, logged. A report that
        failed (a log processor that raised, say) must not end the watching: the next stall
        would go unreported, and a hung service would look healthy.
        """
        try:
            self._watch()
        except Exception:
            try:
                log.exception("stall_watchdog_error")
            except Exception:  # the logging itself is what fails: stderr, as Python would
                traceback.print_exc()
            return False
        return True

    def _watch(self) -> None:
        while True:
            self._bell.acquire(timeout=self.tick)
            # First, before anything that could let the loop thread move on: which task is it
            # running? After a GIL-held stall this is the moment the blocking step ends.
            self._note_loop_task()
            self._observe(slept=self.tick)
            while self._ended:
                # The GIL can be taken from this thread in the middle of a tick or a report (C
                # code that starts while it reads a file). A stall that ended meanwhile must be
                # judged with the gap it made: observe again first.
                if time.monotonic() - self._last_tick > _NOTICEABLE_GAP:
                    self._observe(slept=0.0)
                self._report(self._ended.popleft())
            if self._stopping:
                return
            self._check()

    def _note_loop_task(self) -> None:
        """Remember the task an overdue loop is running, for the report at the stall's end."""
        unit = self._loop_unit
        if unit is None or unit.task or time.monotonic() <= unit.since:
            return
        found = tasks.running_task(self._loop)
        self._peeked = (time.monotonic(), found)  # the step may end before the next line runs
        with self._lock:
            if not unit.task and time.monotonic() > unit.since:
                unit.task = found

    def _note_alarmed_task(self) -> None:
        """On the loop thread, from :mod:`.alarm`: the loop is a threshold late, so the step
        running now is the one that blocks it. No lock: the signal may have interrupted this
        thread while it held the lock."""
        unit = self._loop_unit
        if unit is None or unit.task or time.monotonic() <= unit.since:
            return
        unit.task = tasks.running_task(self._loop)

    def _note_collection(self) -> None:
        """After a long collection, on the thread that ran it, still inside the code it paused:
        remember that code's stack (any later stack, even faulthandler's, shows where the
        thread went next), and if the thread is the loop, its task (the watchdog may get the
        GIL back only after the task's step has run). No lock: the collection may have paused
        this very thread while it held the lock.
        """
        paused = outside_the_watchdog(sys._getframe())
        self._collected = (time.monotonic(), threading.get_ident(), format_stack(paused))
        unit = self._loop_unit
        if unit is None or unit.thread_id != threading.get_ident() or unit.task:
            return
        unit.task = tasks.running_task(self._loop)

    def _observe(self, slept: float) -> None:
        """Read the clocks; note a gap in which the watchdog itself could not run (beyond the
        ``slept`` seconds it meant to sleep since the last reading). The other threads' clocks
        are read only when they may be a stall's baseline later (the process is busy, a unit is
        watched, or the tick came late): an idle service's ticks cost a few system calls each.
        """
        previous_tick, now = self._last_tick, time.monotonic()
        if self._dump is not None:
            self._dump.arm(now)  # first: a dump written meanwhile left nothing armed
        process_cpu = time.process_time()
        late = now - previous_tick - slept
        used = process_cpu - self._last_process_cpu
        self._ticks += 1
        # How long this thread waited for the GIL or for a CPU since the last tick: time in
        # which the process was not paused, whatever the other threads did.
        waited, queued = self._own.read()
        if late > _NOTICEABLE_GAP or self._ticks % _FULL_EVERY == 0:
            # A late tick: a thread new since may hold the GIL.
            self._history.append(self._probes.take(full=True))
        elif used > _IDLE_CPU * self.tick or self._handlers or self._loop_overdue(now):
            self._history.append(self._probes.take())
        if late > _NOTICEABLE_GAP:
            # Some thread held the GIL the watchdog waited for, or the watchdog waited for a
            # CPU: the process ran. Neither (and no CPU used) means it was paused.
            active = max(waited, used)
            paused = max(0.0, late - active) if active < late / 2 else 0.0
            self._gaps.append(_Gap(now, late, paused, max(0.0, late - paused - queued)))
            if paused > self.threshold:
                self._report_watchdog_pause((previous_tick, now), used, paused)
            # faulthandler writes only after the watchdog missed ticks: a late tick.
            stacks = self._dump.take(now) if self._dump is not None else None
            if stacks is not None:
                # Up to when it was read: a stall that began during the read (the GIL is let
                # go for it) is dumped in it too, and the last dump read is the one kept.
                self._dumps.append((previous_tick, time.monotonic(), stacks))
        # Last: a handler that ends while this tick reads files (the GIL is let go then) must
        # still see that the watchdog has not run since the gap, until the gap is recorded.
        self._last_tick, self._last_process_cpu = now, process_cpu

    def _loop_overdue(self, now: float) -> bool:
        unit = self._loop_unit
        return unit is not None and now > unit.since

    def _report_watchdog_pause(self, window: Window, used: float, paused: float) -> None:
        start, end = window
        self._pause_reported_until = end
        self._log_pause(
            PROCESS,
            end - start,
            paused,
            paused=round(paused, 3),
            process_cpu=round(used, 3),
            **_withheld(self._snapshot_before(start, full=True), self._history[-1]),
            hint="no thread of the process ran: SIGSTOP, a frozen container or VM, or CPU "
            "throttling; no code of this service is to blame",
        )

    def _check(self) -> None:
        """Report units that are stuck right now, while they are."""
        now = time.monotonic()
        if not self._handlers and not self._loop_overdue(now):
            return
        due = self._due(now)
        if not due:
            return
        frames = sys._current_frames()
        try:
            for unit, generation, cpu in due:
                stack = format_stack(frames.get(unit.thread_id))
                self._report_detected(unit, generation, cpu, stack, now)
        finally:
            del frames

    def _due(self, now: float) -> list[tuple[_Unit, int, float | None]]:
        """Units stuck for longer than the threshold (a handler: on CPU for that long)."""
        with self._lock:
            units: list[_Unit] = [*self._handlers]
            if self._loop_unit is not None and self._loop is not None and self._loop.is_running():
                units.append(self._loop_unit)  # a loop that has ended is not stalled
            due = []
            for unit in units:
                if now <= unit.since or unit.reported:
                    continue
                if unit.baseline is None:
                    unit.baseline = self._snapshot_before(unit.started)
                if unit.kind == LOOP and not unit.task:
                    unit.task = tasks.running_task(self._loop)
                cpu = read_clock(unit.clock)
                cpu = None if cpu is None else cpu - unit.cpu_start
                if unit.kind == HANDLER:  # a handler that waits is not stalled
                    stuck = cpu is not None and cpu > self.threshold
                else:
                    stuck = now - unit.since > self.threshold
                if stuck:
                    due.append((unit, unit.generation, cpu))
            return due

    def _report_detected(
        self, unit: _Unit, generation: int, cpu: float | None, sampled: Stack, now: float
    ) -> None:
        window = (unit.since, now)
        cause, extra = self._diagnose(unit, window, cpu, unit.baseline)
        if cause is Cause.PAUSED:
            return  # looked at again next tick; a pause is reported as such once it is over
        stack = self._stack_for(unit, cause, sampled, window, extra)
        with self._lock:
            if unit.generation != generation or unit.reported:
                return  # it moved on while we looked: the stack would be wrong
            unit.reported, unit.stack = True, stack
        log.warning(
            "stall_detected",
            kind=unit.kind,
            name=unit.name,
            cause=cause.value,
            thread=thread_label(unit.thread_id),
            stalled_for=round(now - unit.since, 3),
            threshold=self.threshold,
            culprit=extra.pop("culprit_elsewhere", None) or culprit(stack or []),
            stack=stack or [],
            **extra,
            **unit.task,
            **unit.fields,
        )

    def _snapshot_before(self, moment: float, *, full: bool = False) -> Snapshot:
        """The latest snapshot (``full``: the latest full one) taken at or before ``moment``."""
        for snapshot in reversed(self._history):
            if snapshot.at <= moment and (snapshot.full or not full):
                return snapshot
        return next((s for s in self._history if s.full or not full), self._history[0])

    def _diagnose(
        self,
        unit: _Unit,
        window: Window,
        cpu: float | None,
        baseline: Snapshot | None,
        counted: Scheduling | None = None,
    ) -> tuple[Cause, Fields]:
        """The class of ``unit``'s stall over ``window``, and the evidence for it. ``cpu`` is the
        thread's CPU time over the window; ``counted``, a handler's scheduler counts at its end."""
        start, end = window
        before = baseline or self._snapshot_before(start)
        before_full = self._snapshot_before(start, full=True)
        after = self._probes.take(full=True)  # rare: only for a stall
        self._history.append(after)
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
        paused = _within(self._gaps, start, end, _PAUSED)
        starved = _within(self._gaps, start, end, _HELD)
        seen = [s for s in self._history if s.at > before.at]  # a thread that has ended since
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
            extra["gil_holder"] = self._probes.names.get(holder, "?")
            extra["gil_holder_thread"] = thread_label(holder)
        if cause is Cause.GC:
            extra["gc_seconds"] = round(gc_time, 3)
            extra["gc_generation"] = self._gc.generation
        if cause is Cause.PAUSED:
            extra.update({key: round(value, 3) for key, value in withheld.items()})
        return cause, extra

    def _stack_for(
        self, unit: _Unit, cause: Cause, sampled: Stack | None, window: Window, extra: Fields
    ) -> Stack | None:
        """The stack to report: the one a collection paused on this thread; else, if the GIL
        was held, faulthandler's from during the stall (one sampled afterwards would show where
        the thread went next); else ``sampled``. Adds the stack and culprit of another thread
        to blame (the GIL holder, the collecting thread) to ``extra``.
        """
        start, end = window
        dumps = [stacks for begun, done, stacks in self._dumps if begun < end and done > start]
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
            extra["faulthandler_file"] = str(self._dump.path) if self._dump else None
        if collected is not None and collected[0] != unit.thread_id:
            # Any thread's allocation may start a collection, which holds the GIL throughout.
            extra["gc_thread"] = thread_label(collected[0])
            extra["gc_thread_name"] = self._probes.names.get(collected[0], "?")
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
        thread = self._gc.thread
        if self._gc.started is not None and thread is not None:
            running = outside_the_watchdog(sys._current_frames().get(thread))
            return thread, format_stack(running)
        if self._collected is None:
            return None
        at, thread, stack = self._collected
        return (thread, stack) if start <= at <= end else None

    def _report(self, ended: _Ended) -> None:
        """Classify one stall that is over and log it (or the pause it really was)."""
        unit = ended.unit
        cause, extra = self._diagnose(
            unit, (ended.started, ended.ended), ended.cpu, ended.baseline, ended.scheduling
        )
        if ended.slow and cause is not Cause.GIL_WAIT:
            self._log_slow(ended)
            return
        if cause is Cause.PAUSED:
            # Unless the watchdog saw the same pause itself and has reported it.
            if ended.ended > self._pause_reported_until + self.tick:
                hint = "the process was paused or throttled; no code of this service is to blame"
                self._log_pause(unit.kind, ended.duration, ended.duration, **extra, hint=hint)
            return
        seen_until = self._history[-1].at  # the snapshot just taken
        stack = self._stack_for(unit, cause, ended.stack, (ended.started, seen_until), extra)
        request = ended.task
        peeked_at, peeked = self._peeked
        if unit.kind == LOOP and not request and ended.started < peeked_at <= seen_until:
            request = peeked  # seen by the watchdog at the stall's very end
        STALLS.labels(kind=unit.kind, cause=cause.value).inc()
        STALL_DURATION.labels(kind=unit.kind, cause=cause.value).observe(ended.duration)
        event = "event_loop_stalled" if unit.kind == LOOP else "handler_stalled"
        report: Fields = {
            "kind": unit.kind,
            "name": unit.name,
            "cause": cause.value,
            "thread": thread_label(unit.thread_id),
            "duration": round(ended.duration, 3),
            "threshold": self.threshold,
            "stack_captured": stack is not None,
            "culprit": extra.pop("culprit_elsewhere", None) or culprit(stack or []),
            "stack": stack or [],
            **extra,
        }
        # Then the request's fields (its id, trace, the handler's own): the report's win.
        report.update((key, value) for key, value in request.items() if key not in report)
        log.warning(event, **report)
        spans.record_stall(event, ended.ended - ended.duration, ended.ended, report)

    def _log_pause(self, kind: str, duration: float, counted: float, **fields: object) -> None:
        """Count a pause of ``counted`` seconds and log it as ``process_paused``."""
        cause = Cause.PAUSED.value
        STALLS.labels(kind=kind, cause=cause).inc()
        STALL_DURATION.labels(kind=kind, cause=cause).observe(counted)
        log.warning("process_paused", kind=kind, cause=cause, duration=round(duration, 3), **fields)


class _Watched:
    """What :meth:`StallWatchdog.watch_handler` returns. A class rather than a
    ``@contextmanager``: it wraps every synchronous RPC."""

    __slots__ = ("unit", "watchdog")

    def __init__(self, watchdog: StallWatchdog, unit: _Unit) -> None:
        self.watchdog = watchdog
        self.unit = unit

    def __enter__(self) -> None:
        self.watchdog._add_handler(self.unit)

    def __exit__(self, *_: object) -> None:
        _current.watch = None
        self.watchdog._settle(self.unit)


class _Own:
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


def _delta(before: dict[int, float], after: dict[int, float], ident: int) -> float:
    """How far ``ident``'s reading moved (a thread that started in between: all of it)."""
    return after[ident] - before.get(ident, 0.0) if ident in after else 0.0


def _overlap(gap: _Gap, start: float, end: float) -> float:
    """Seconds of ``gap``'s lateness that fall between ``start`` and ``end``."""
    return max(0.0, min(gap.end, end) - max(gap.end - gap.late, start))


def _within(gaps: Iterable[_Gap], start: float, end: float, part: Callable[[_Gap], float]) -> float:
    """Seconds of the gaps' ``part`` (paused, held) between ``start`` and ``end``, each gap's
    part taken to be spread evenly over it."""
    return sum(_overlap(gap, start, end) * part(gap) / gap.late for gap in gaps)


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


@contextmanager
def waiting() -> Iterator[None]:
    """Mark the current sync handler as waiting for offloaded work, not stalled, during the
    block: its stall clock stops, and starts again from zero afterwards. Outside a watched
    handler this does nothing."""
    watch: tuple[StallWatchdog, _Unit] | None = getattr(_current, "watch", None)
    if watch is None:
        yield
        return
    watchdog, unit = watch
    watchdog._settle(unit)
    try:
        yield
    finally:
        watchdog._resume(unit)
