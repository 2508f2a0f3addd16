"""The stall watchdog: one daemon thread that watches the event loop and sync handlers.

A heartbeat on the loop stamps when it was last alive; each sync RPC is watched while it runs.
The watchdog thread wakes every ``tick``, reports a unit stuck for longer than the threshold
as ``stall_detected`` while it is, and once it moves again as ``event_loop_stalled`` or
``handler_stalled`` (or ``process_paused``, blaming no code). A handler is judged by its
thread's CPU time (one that waits is only ``handler_slow``), the loop by wall time. While C
code holds the GIL, faulthandler (:mod:`.dumpfile`) writes the stacks the watchdog cannot take.
What is watched is a :class:`~.units.Unit`; what a stall was, :mod:`.diagnosis` decides from
what this thread records. docs/runtime/stall-detection.md has the details.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

from ..logging import get_logger
from ..metrics import EVENTLOOP_LAG, LAG_WINDOW, SLOW_HANDLERS, STALL_DURATION, STALLS
from . import spans, tasks
from .alarm import LoopAlarm
from .causes import Cause
from .diagnosis import Diagnostician
from .dumpfile import DumpFile, default_dump_path
from .gaps import NOTICEABLE_GAP, Gap, OwnWaits
from .probes import GcTimer, Probes, read_clock, schedstat, scheduling
from .stacks import culprit, format_stack, outside_the_watchdog, thread_label
from .units import HANDLER, LOOP, PROCESS, Ended, Fields, Stack, Unit, Window, this_thread

log = get_logger(__name__)

_FULL_EVERY = 10  # ticks between full snapshots (see probes.Snapshot)
_IDLE_CPU = 0.02  # share of the time a process or loop may be on CPU and still count as idle


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
        self._loop_unit: Unit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: set[Unit] = set()
        self._ended: deque[Ended] = deque()
        self._stopping = False
        # Held except while someone rings it: the watchdog sleeps by trying to take it. A bare
        # lock's timed acquire is one C call, far cheaper per tick than threading.Event.wait.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._thread: threading.Thread | None = None
        self._gc = GcTimer(threshold / 2, self._note_collection)
        self._alarm = LoopAlarm(self._note_alarmed_task)
        self._probes = Probes(self._gc)
        self._diagnosis = Diagnostician(threshold, self._probes, self._gc)
        self._pause_reported_until = 0.0
        self._ticks = 0
        self._last_tick = time.monotonic()
        self._last_process_cpu = time.process_time()
        self._peeked: tuple[float, Fields] = (0.0, {})
        self._own = OwnWaits(None)

    def start(self) -> None:
        """Start the watchdog thread (idempotent)."""
        if self._thread is not None:
            return
        if self._use_faulthandler:
            path = self._dump_path or default_dump_path()
            after = round(self.threshold + 2 * self.tick, 3)  # then re-armed every 2 ticks
            try:
                self._dump = DumpFile(path, after, 2 * self.tick)
                self._diagnosis.dump_file = self._dump.path
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
            self._diagnosis.dump_file = None

    def watch_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (default: the running loop); safe to call from any thread."""
        target = loop if loop is not None else asyncio.get_running_loop()
        target.call_soon_threadsafe(self._first_beat, target)

    def watch_handler(self, name: str, **fields: object) -> AbstractContextManager[None]:
        """Watch the current thread while the block runs (one synchronous RPC, ``name``);
        ``fields`` go into every report, after the request id and trace id bound in this thread.
        """
        request = tasks.current_request()
        return _Watched(self, Unit(HANDLER, name, {**request, **fields} if fields else request))

    def _add_handler(self, unit: Unit) -> None:
        with self._lock:
            self._handlers.add(unit)
        this_thread.watch = (self, unit)

    def _settle(self, unit: Unit) -> None:
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
        return self._thread is not None and (
            end - self._last_tick > self.tick + NOTICEABLE_GAP
            or self._diagnosis.held_during(start, end) > self.threshold
        )

    def _log_slow(self, ended: Ended) -> None:
        SLOW_HANDLERS.inc()
        log.info(
            "handler_slow",
            name=ended.unit.name,
            duration=round(ended.duration, 3),
            cpu=round(ended.cpu, 3),
            threshold=self.threshold,
            **ended.unit.fields,
        )

    def _resume(self, unit: Unit) -> None:
        now = time.monotonic()
        with self._lock:
            unit.started = unit.since = now
            unit.cpu_start = time.thread_time()
            self._handlers.add(unit)

    def _hand_over(self, ended: Ended) -> None:
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
        unit = Unit(LOOP, LOOP, {})
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

    def _beat(self, loop: asyncio.AbstractEventLoop, unit: Unit) -> None:
        now, cpu = time.monotonic(), time.thread_time()
        lag = max(0.0, now - unit.since)
        EVENTLOOP_LAG.observe(lag)
        # Waking an idle process costs more than the beat itself: a loop that has done next to
        # nothing since the last beat is looked at only as often as the watchdog thread looks.
        idle = cpu - unit.cpu_start < _IDLE_CPU * (now - unit.started)
        interval = self.rest_interval if idle else self.lag_interval
        with self._lock:
            ended = unit.ended(now, lag, cpu) if unit.reported or lag > self.threshold else None
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
        self._own = OwnWaits(own_stat)
        self._diagnosis.history.append(self._probes.take())
        # Gaps are measured on this thread's clocks, from here.
        self._last_tick, self._last_process_cpu = time.monotonic(), time.process_time()
        self._own.read()
        try:
            self._watch()
        finally:
            own_stat.close()

    def _watch(self) -> None:
        """Watch until stopped. A report that fails (a log processor that raised, say) is
        logged and must not end the watching: the next stall would go unreported, and a hung
        service would look healthy.
        """
        while True:
            try:
                self._bell.acquire(timeout=self.tick)
                # First, before anything that could let the loop thread move on: which task is
                # it running? After a GIL-held stall this is the moment the blocking step ends.
                self._note_loop_task()
                self._observe(slept=self.tick)
                while self._ended:
                    # The GIL can be taken from this thread in the middle of a tick or a report
                    # (C code that starts while it reads a file). A stall that ended meanwhile
                    # must be judged with the gap it made: observe again first.
                    if time.monotonic() - self._last_tick > NOTICEABLE_GAP:
                        self._observe(slept=0.0)
                    self._report(self._ended.popleft())
                if self._stopping:
                    return
                self._check()
            except Exception:
                try:
                    log.exception("stall_watchdog_error")
                except Exception:  # the logging itself is what fails: stderr, as Python would
                    traceback.print_exc()

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
        self._diagnosis.collected = (time.monotonic(), threading.get_ident(), format_stack(paused))
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
        if late > NOTICEABLE_GAP or self._ticks % _FULL_EVERY == 0:
            # A late tick: a thread new since may hold the GIL.
            self._diagnosis.history.append(self._probes.take(full=True))
        elif used > _IDLE_CPU * self.tick or self._handlers or self._loop_overdue(now):
            self._diagnosis.history.append(self._probes.take())
        if late > NOTICEABLE_GAP:
            # Some thread held the GIL the watchdog waited for, or the watchdog waited for a
            # CPU: the process ran. Neither (and no CPU used) means it was paused.
            active = max(waited, used)
            paused = max(0.0, late - active) if active < late / 2 else 0.0
            self._diagnosis.gaps.append(Gap(now, late, paused, max(0.0, late - paused - queued)))
            if paused > self.threshold:
                self._report_watchdog_pause((previous_tick, now), used, paused)
            # faulthandler writes only after the watchdog missed ticks: a late tick.
            stacks = self._dump.take(now) if self._dump is not None else None
            if stacks is not None:
                # Up to when it was read: a stall that began during the read (the GIL is let
                # go for it) is dumped in it too, and the last dump read is the one kept.
                self._diagnosis.dumps.append((previous_tick, time.monotonic(), stacks))
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
            **self._diagnosis.withheld_since(start),
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

    def _due(self, now: float) -> list[tuple[Unit, int, float | None]]:
        """Units stuck for longer than the threshold (a handler: on CPU for that long)."""
        with self._lock:
            units: list[Unit] = [*self._handlers]
            if self._loop_unit is not None and self._loop is not None and self._loop.is_running():
                units.append(self._loop_unit)  # a loop that has ended is not stalled
            due = []
            for unit in units:
                if now <= unit.since or unit.reported:
                    continue
                if unit.baseline is None:
                    unit.baseline = self._diagnosis.snapshot_before(unit.started)
                if unit.kind == LOOP and not unit.task:
                    unit.task = tasks.running_task(self._loop)
                cpu = read_clock(unit.clock)
                cpu = None if cpu is None else cpu - unit.cpu_start
                # A handler by its CPU time (one that waits is not stalled), the loop by wall time.
                stuck_for = (cpu or 0.0) if unit.kind == HANDLER else now - unit.since
                if stuck_for > self.threshold:
                    due.append((unit, unit.generation, cpu))
            return due

    def _report_detected(
        self, unit: Unit, generation: int, cpu: float | None, sampled: Stack, now: float
    ) -> None:
        window = (unit.since, now)
        cause, extra = self._diagnosis.diagnose(unit, window, cpu, unit.baseline)
        if cause is Cause.PAUSED:
            return  # looked at again next tick; a pause is reported as such once it is over
        stack = self._diagnosis.stack_for(unit, cause, sampled, window, extra)
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

    def _report(self, ended: Ended) -> None:
        """Classify one stall that is over and log it (or the pause it really was)."""
        unit = ended.unit
        cause, extra = self._diagnosis.diagnose(
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
        seen_until = self._diagnosis.history[-1].at  # the snapshot just taken
        stack = self._diagnosis.stack_for(
            unit, cause, ended.stack, (ended.started, seen_until), extra
        )
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

    def __init__(self, watchdog: StallWatchdog, unit: Unit) -> None:
        self.watchdog = watchdog
        self.unit = unit

    def __enter__(self) -> None:
        self.watchdog._add_handler(self.unit)

    def __exit__(self, *_: object) -> None:
        this_thread.watch = None
        self.watchdog._settle(self.unit)


@contextmanager
def waiting() -> Iterator[None]:
    """Mark the current sync handler as waiting for offloaded work, not stalled, during the
    block: its stall clock stops, and starts again from zero afterwards. Outside a watched
    handler this does nothing."""
    watch: tuple[StallWatchdog, Unit] | None = getattr(this_thread, "watch", None)
    if watch is None:
        yield
        return
    watchdog, unit = watch
    watchdog._settle(unit)
    try:
        yield
    finally:
        watchdog._resume(unit)
