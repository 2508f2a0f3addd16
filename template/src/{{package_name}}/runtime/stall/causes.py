"""What a stall was: the classes an on-call engineer acts on differently (each has a runbook
in docs/runtime/stall-detection.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Cause(StrEnum):
    PYTHON = "python"  # the thread ran Python code the whole time
    C_CODE = "c_code"  # the thread ran C code that held the GIL (nothing else could run)
    SYSCALL = "syscall"  # the thread waited in a system call: sleep, socket, file, lock
    GIL_WAIT = "gil_wait"  # the thread waited for the GIL that another thread held
    PAUSED = "paused"  # the process got no CPU: SIGSTOP, CPU throttling, VM steal, a full node
    GC = "gc"  # a garbage-collection pause
    UNKNOWN = "unknown"  # no per-thread CPU clocks on this platform


@dataclass(frozen=True)
class Evidence:
    """Seconds of each kind over one stall of ``wall`` seconds."""

    wall: float
    thread_cpu: float | None  # the stalled thread's own CPU time
    thread_queued: float  # the stalled thread's time runnable but waiting for a CPU
    paused: float  # no thread ran: watchdog gaps without CPU, cgroup throttling, steal
    gil_starved: float  # the watchdog could not get the GIL while the process ran
    gc: float  # in garbage collection (any thread)
    other_cpu: float  # CPU of the busiest other thread
    threshold: float
    # Seconds the thread spent asking for the GIL (its wake-ups times the switch interval);
    # None if not counted. Tells a thread that waited for the GIL from one blocked in a
    # system call meanwhile, which the GIL's holder did not delay.
    thread_gil_wait: float | None = None


def classify(evidence: Evidence) -> Cause:
    """The class of a stall, from where its time went. "Most of" means at least half: of the
    wall time, or, for running or waiting, of the time the process was allowed to run at all."""
    wall = evidence.wall
    cpu = evidence.thread_cpu
    if evidence.paused >= wall / 2 and (cpu is None or cpu < evidence.threshold):
        return Cause.PAUSED
    # On a crowded machine a busy thread spends much of its time waiting for a CPU; that
    # counts once the thread has also really run (a thread waking up from a wait queues too,
    # but uses next to no CPU each time). A thread waiting for the GIL sleeps: it neither runs
    # nor queues.
    queued = evidence.thread_queued if cpu is not None and cpu >= evidence.threshold / 10 else 0.0
    # Time in the run queue is no code's doing: a stall that was mostly a collection once that
    # is left out was the collection's (a crowded machine can keep the thread waiting for a CPU
    # after a collection for longer than the collection lasted).
    if evidence.gc >= max(evidence.threshold, wall - queued) / 2:
        return Cause.GC
    if cpu is None:
        return Cause.UNKNOWN
    runnable = max(wall - evidence.paused, 1e-9)
    gil_held = evidence.gil_starved >= runnable / 2  # the watchdog was kept from the GIL
    if cpu + queued >= runnable / 2:
        return Cause.C_CODE if gil_held else Cause.PYTHON
    # Another thread busy is not enough (C code may run there without the GIL): the watchdog
    # must have been kept from the GIL as well, and the thread must have asked for it.
    gil_wait = evidence.thread_gil_wait
    asked_for_gil = gil_wait is None or gil_wait >= evidence.gil_starved / 2
    if gil_held and evidence.other_cpu >= runnable / 2 and asked_for_gil:
        return Cause.GIL_WAIT
    return Cause.SYSCALL
