"""Stall detection: name the code that blocks the event loop (or a sync handler) while it blocks.

Two halves cooperate:

* a heartbeat on the event loop (``loop.call_later`` every ``lag_interval``) records how late
  each wake-up was (``event_loop_lag_seconds``) and stamps when the loop was last alive;
* one daemon thread, :class:`StallWatchdog`, wakes every ``tick`` and looks at each watched
  unit (the loop, or each sync RPC registered with :meth:`StallWatchdog.watch_handler`). A unit
  that has not made progress for ``threshold`` gets its thread's stack captured from outside
  with ``sys._current_frames()`` and logged as ``stall_detected`` while it is still blocked.
  When the unit moves again, one ``event_loop_stalled`` / ``handler_stalled`` event carries the
  duration and the captured stack.

A Python thread cannot run while C code holds the GIL (a regex with catastrophic
backtracking, for example), so the watchdog also re-arms ``faulthandler.dump_traceback_later``
on every tick. If the watchdog itself is starved for ``threshold + 2 * tick``, faulthandler's
C thread writes every thread's stack to stderr while the block is still going on. The loop's
thread id is logged at start so that dump can be matched to the loop thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import faulthandler
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from . import context
from .logging import get_logger
from .metrics import EVENT_LOOP_LAG, STALL_DURATION, STALLS, WATCHDOG_STARVED

LOOP = "event_loop"
HANDLER = "handler"
MAX_FRAMES = 60

log = get_logger(__name__)

# Frames from here are rarely what to fix: the culprit is the innermost frame outside them.
_STDLIB_PREFIXES = tuple(
    {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"], "<frozen "}
)


def thread_label(ident: int) -> str:
    """A thread id spelt the way faulthandler prints it (``Thread 0x00007f...``)."""
    return f"0x{ident:016x}"


def format_stack(frame: FrameType | None) -> list[str]:
    """``file:line in function`` for each frame, outermost first, innermost last."""
    if frame is None:
        return []
    return [
        f"{entry.filename}:{entry.lineno} in {entry.name}"
        for entry in traceback.extract_stack(frame, limit=MAX_FRAMES)
    ]


def culprit(stack: list[str]) -> str | None:
    """The innermost frame of ``stack`` outside the standard library (or the innermost one)."""
    for entry in reversed(stack):
        if not entry.startswith(_STDLIB_PREFIXES):
            return entry
    return stack[-1] if stack else None


@dataclass(eq=False)
class _Unit:
    """Something the watchdog watches: the event loop, or one sync RPC."""

    kind: str
    name: str
    thread_id: int
    since: float  # monotonic time from which on a lack of progress counts as a stall
    fields: dict[str, object] = field(default_factory=dict)
    generation: int = 0  # bumped on every sign of progress, so late captures are discarded
    reported: bool = False
    stack: list[str] | None = None


class StallWatchdog:
    """Reports an event loop or handler blocked for longer than ``threshold`` seconds.

    ``start()`` starts the watchdog thread, ``watch_loop()`` adds an event loop, and
    ``watch_handler()`` wraps one synchronous RPC. ``stop()`` ends all of it.
    """

    def __init__(
        self,
        threshold: float,
        *,
        lag_interval: float = 0.1,
        use_faulthandler: bool = True,
        dump_file: TextIO | None = None,
    ) -> None:
        if threshold <= 0 or lag_interval <= 0:
            raise ValueError("threshold and lag_interval must be positive")
        self.threshold = threshold
        self.lag_interval = lag_interval
        self.tick = max(threshold / 2, 0.1)
        self.dump_after = round(threshold + 2 * self.tick, 3)
        self._use_faulthandler = use_faulthandler
        self._dump_file = dump_file
        self._dump_fd: int | None = None
        self._lock = threading.Lock()
        self._loop_unit: _Unit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: set[_Unit] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_tick = 0.0
        self._last_starved: tuple[float, float] | None = None  # (from, to), monotonic

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog thread (idempotent)."""
        if self._thread is not None:
            return
        if self._use_faulthandler:
            self._dump_fd = self._find_dump_fd()
        self._stopping.clear()
        self._last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)
        self._thread.start()
        log.info(
            "stall_watchdog_started",
            threshold=self.threshold,
            tick=self.tick,
            faulthandler_after=self.dump_after if self._dump_fd is not None else None,
            watchdog_thread=thread_label(self._thread.ident or 0),
        )

    def stop(self) -> None:
        """Stop watching: end the thread, the loop heartbeat and the faulthandler timer."""
        with self._lock:
            self._loop_unit = None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join()
        if self._dump_fd is not None:
            faulthandler.cancel_dump_traceback_later()

    def watch_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (default: the running loop); safe to call from any thread."""
        target = loop if loop is not None else asyncio.get_running_loop()
        target.call_soon_threadsafe(self._first_beat, target)

    @contextmanager
    def watch_handler(self, name: str, **fields: object) -> Iterator[None]:
        """Watch the current thread while the block runs (one synchronous RPC).

        ``name`` is the RPC method; ``fields`` (e.g. ``request_id=...``) go into every report.
        """
        unit = _Unit(HANDLER, name, threading.get_ident(), time.monotonic(), dict(fields))
        with self._lock:
            self._handlers.add(unit)
        _current.watch = (self, unit)
        try:
            yield
        finally:
            _current.watch = None
            self._settle(unit)

    def _settle(self, unit: _Unit) -> None:
        """Stop watching ``unit``; if its last stretch of work was a stall, report its end."""
        duration = time.monotonic() - unit.since
        with self._lock:
            self._handlers.discard(unit)
            unit.generation += 1
            reported, stack = unit.reported, unit.stack
            unit.reported, unit.stack = False, None
        if reported or duration > self.threshold:
            self._stall_ended(unit, duration, stack)

    def _resume(self, unit: _Unit) -> None:
        with self._lock:
            unit.since = time.monotonic()
            self._handlers.add(unit)

    # -- the loop side ---------------------------------------------------------------------

    def _first_beat(self, loop: asyncio.AbstractEventLoop) -> None:
        ident = threading.get_ident()
        unit = _Unit(LOOP, LOOP, ident, time.monotonic() + self.lag_interval)
        with self._lock:
            self._loop_unit = unit
            self._loop = loop
        log.info(
            "stall_watch_loop",
            loop_thread=thread_label(ident),
            loop_thread_id=ident,
            lag_interval=self.lag_interval,
        )
        loop.call_later(self.lag_interval, self._beat, loop, unit)

    def _beat(self, loop: asyncio.AbstractEventLoop, unit: _Unit) -> None:
        now = time.monotonic()
        lag = max(0.0, now - unit.since)
        EVENT_LOOP_LAG.observe(lag)
        with self._lock:
            reported, stack = unit.reported, unit.stack
            unit.reported, unit.stack = False, None
            unit.since = now + self.lag_interval
            unit.generation += 1
            watching = self._loop_unit is unit
        if reported or lag > self.threshold:
            self._stall_ended(unit, lag, stack)
        if watching:
            loop.call_later(self.lag_interval, self._beat, loop, unit)

    # -- the watchdog thread ---------------------------------------------------------------

    def _find_dump_fd(self) -> int | None:
        """The file descriptor faulthandler writes to: ``dump_file``, else stderr."""
        for candidate in (self._dump_file, sys.stderr, sys.__stderr__):
            try:
                if candidate is not None:
                    return candidate.fileno()
            except (AttributeError, OSError, ValueError):
                continue
        log.warning("stall_faulthandler_unavailable", reason="stderr has no file descriptor")
        return None

    def _arm(self) -> None:
        if self._dump_fd is not None:
            faulthandler.dump_traceback_later(self.dump_after, repeat=False, file=self._dump_fd)

    def _run(self) -> None:
        self._arm()
        while not self._stopping.wait(self.tick):
            self._arm()
            now = time.monotonic()
            gap = now - self._last_tick
            if gap > self.dump_after:
                with self._lock:
                    self._last_starved = (self._last_tick, now)
                WATCHDOG_STARVED.inc()
                log.warning(
                    "stall_watchdog_starved",
                    starved_for=round(gap - self.tick, 3),
                    faulthandler_dumped=self._dump_fd is not None,
                    hint="C code held the GIL; the culprit's stack is in the faulthandler "
                    "dump on stderr",
                )
            self._last_tick = now
            self._check(now)

    def _check(self, now: float) -> None:
        with self._lock:
            loop = self._loop
            units: list[_Unit | None] = [*self._handlers]
            if loop is not None and loop.is_running():  # a loop that has ended is not stalled
                units.append(self._loop_unit)
            due = [
                (unit, unit.generation)
                for unit in units
                if unit is not None and not unit.reported and now - unit.since > self.threshold
            ]
        if not due:
            return
        frames = sys._current_frames()
        try:
            for unit, generation in due:
                stack = format_stack(frames.get(unit.thread_id))
                with self._lock:
                    if unit.generation != generation or unit.reported:
                        continue  # it moved on while we looked: the stack would be wrong
                    unit.reported, unit.stack = True, stack
                extra = _running_task(loop) if unit.kind == LOOP else {}
                log.warning(
                    "stall_detected",
                    kind=unit.kind,
                    name=unit.name,
                    thread=thread_label(unit.thread_id),
                    stalled_for=round(now - unit.since, 3),
                    threshold=self.threshold,
                    culprit=culprit(stack or []),
                    stack=stack,
                    **extra,
                    **unit.fields,
                )
        finally:
            del frames

    def _starved_during(self, start: float, end: float) -> bool:
        """Whether the watchdog thread was starved of the GIL between ``start`` and ``end``."""
        with self._lock:
            starved = self._last_starved
        watching = self._thread is not None and self._dump_fd is not None
        if watching and end - self._last_tick > self.dump_after:
            return True  # still starved a moment ago: it has not even woken up yet
        return starved is not None and starved[0] < end and starved[1] > start

    def _stall_ended(self, unit: _Unit, duration: float, stack: list[str] | None) -> None:
        STALLS.labels(kind=unit.kind).inc()
        STALL_DURATION.labels(kind=unit.kind).observe(duration)
        end = time.monotonic()
        extra: dict[str, object] = {}
        if self._starved_during(end - duration, end):
            extra["faulthandler_dump"] = "stderr"  # the GIL was held: the stack is in that dump
        log.warning(
            "event_loop_stalled" if unit.kind == LOOP else "handler_stalled",
            kind=unit.kind,
            name=unit.name,
            thread=thread_label(unit.thread_id),
            duration=round(duration, 3),
            threshold=self.threshold,
            stack_captured=stack is not None,
            culprit=culprit(stack or []),
            stack=stack or [],
            **extra,
            **unit.fields,
        )


_current = threading.local()  # ``watch``: (watchdog, unit) of the handler this thread runs


@contextmanager
def waiting() -> Iterator[None]:
    """Mark the current sync handler as waiting, not stalled, for the duration of the block.

    A handler blocked on offloaded work is doing its job: its stall clock stops while it waits
    and starts again from zero afterwards. Outside a watched handler this does nothing.
    """
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


def _running_task(loop: asyncio.AbstractEventLoop | None) -> dict[str, object]:
    """The task the blocked loop is running, and its request id, read from another thread.

    Best effort: a plain callback (not a task) is running, or the interpreter keeps the current
    task per thread, then nothing is known.
    """
    if loop is None:
        return {}
    try:
        task = asyncio.current_task(loop)
    except RuntimeError:
        return {}
    if task is None:
        return {}
    found: dict[str, object] = {"task": task.get_name()}
    task_context: contextvars.Context | None = getattr(task, "get_context", lambda: None)()
    if task_context is not None:
        values = context.snapshot_of(task_context)
        found.update({key: value for key, value in values.items() if value is not None})
    return found
