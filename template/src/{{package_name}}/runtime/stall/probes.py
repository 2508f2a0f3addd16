"""Where the time went: CPU clocks of threads and of the process, CPU the kernel withheld, GC.

Every stall looks the same from outside (a timer ran late); these readings tell the causes
apart. A thread that used almost no CPU during a stall was waiting (in a system call, or for
the GIL); one that used all of it was running. CPU the cgroup throttled or the hypervisor
stole, and time in which no thread of the process ran at all, mean the process was paused.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# cgroup v2, then v1 (whose counter is in nanoseconds).
_THROTTLE_FILES = (
    ("/sys/fs/cgroup/cpu.stat", b"throttled_usec", 1e-6),
    ("/sys/fs/cgroup/cpu/cpu.stat", b"throttled_time", 1e-9),
    ("/sys/fs/cgroup/cpu,cpuacct/cpu.stat", b"throttled_time", 1e-9),
)
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_clock(ident: int) -> int | None:
    """The CPU-time clock of the running thread ``ident``, readable from any thread. It names
    the kernel thread, not a pointer: once the thread has ended, reading it fails cleanly."""
    try:
        return time.pthread_getcpuclockid(ident)
    except (AttributeError, OSError):  # not on this platform
        return None


def read_clock(clock: int | None) -> float | None:
    """Seconds of CPU on ``clock``, or ``None`` if it is unknown or its thread has ended."""
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None


class KernelFile:
    """A kernel file kept open, so that each reading is a single ``pread``."""

    def __init__(self, path: str) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    def read(self) -> bytes | None:
        """The file's content, or ``None`` if it cannot be read (its thread has ended)."""
        if self._fd is None:
            return None
        try:
            return os.pread(self._fd, 4096, 0)
        except OSError:
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def schedstat(native_id: int) -> KernelFile:
    """One thread's scheduler statistics (Linux), read with :func:`scheduling`."""
    return KernelFile(f"/proc/self/task/{native_id}/schedstat")


@dataclass(frozen=True)
class Scheduling:
    """What the scheduler counted for one thread so far (``/proc/self/task/<tid>/schedstat``)."""

    queued: float  # seconds runnable but waiting for a CPU
    wakeups: int  # times it was put on a CPU


def scheduling(stat: KernelFile) -> Scheduling | None:
    """The thread's :class:`Scheduling`; ``None`` once it has ended (or off Linux). A thread
    that wants a CPU but gets none is busy, not blocked (its CPU clock alone would say idle on
    a crowded machine). One waiting for the GIL wakes up every switch interval (5 ms) to ask
    for it; one blocked in a system call does not wake up at all."""
    try:
        fields = (stat.read() or b"").split()
        return Scheduling(int(fields[1]) / 1e9, int(fields[2]))
    except (IndexError, ValueError):
        return None


def _throttle_counter() -> tuple[KernelFile, bytes, float] | None:
    for path, key, scale in _THROTTLE_FILES:
        counter = KernelFile(path)
        if key in (counter.read() or b""):
            return counter, key, scale
        counter.close()  # not this kernel's file, or not its counter
    return None


class GcTimer:
    """Total time spent in garbage collection, from ``gc.callbacks``. After a collection of at
    least ``long_after`` seconds, ``on_long`` runs on its thread, inside the code it paused."""

    def __init__(self, long_after: float, on_long: Callable[[], None]) -> None:
        self.total = 0.0
        self.started: float | None = None
        self.generation: int | None = None  # of the last collection longer than a millisecond
        self.thread: int | None = None  # the thread of the running (or last) collection
        self.long_after = long_after
        self.on_long = on_long

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        if phase == "start":
            self.started, self.thread = now, threading.get_ident()
        elif self.started is not None:
            took = now - self.started
            self.total += took
            self.started = None
            if took > 0.001:
                self.generation = info.get("generation")
            if took >= self.long_after:
                self.on_long()

    def reading(self, now: float) -> float:
        """Seconds spent in collections so far, counting one still running."""
        started = self.started
        return self.total + (now - started if started is not None else 0.0)


@dataclass(frozen=True)
class Snapshot:
    """What the clocks said at one moment (``at``, monotonic seconds). A light snapshot reads
    only clocks, which never release the GIL. A full one also reads the kernel's files (run-queue
    waits, throttling, steal): each read lets another thread take the GIL, so it is rare."""

    at: float
    threads: dict[int, float] = field(default_factory=dict)  # thread ident -> CPU seconds
    gc: float = 0.0
    full: bool = False
    queued: dict[int, float] = field(default_factory=dict)  # thread ident -> run-queue wait
    wakeups: dict[int, float] = field(default_factory=dict)  # thread ident -> times scheduled
    throttled: float | None = None
    steal: float | None = None


class Probes:
    """Takes :class:`Snapshot` readings; a light one is cheap enough for every watchdog tick."""

    def __init__(self, gc_timer: GcTimer) -> None:
        self.gc_timer = gc_timer
        self._throttle = _throttle_counter()
        self._proc_stat = KernelFile("/proc/stat")
        self._cpus = max(1, os.cpu_count() or 1)
        self._clocks: dict[int, int | None] = {}  # thread ident -> CPU clock id
        self._stats: dict[int, KernelFile] = {}  # thread ident -> its schedstat
        self._native_ids: dict[int, int | None] = {}  # thread ident -> the kernel's thread id
        self.names: dict[int, str] = {}

    def _watch_threads(self) -> None:
        alive = {thread.ident: thread for thread in threading.enumerate() if thread.ident}
        for ident in self._clocks.keys() - alive.keys():
            self._forget(ident)
        for ident, thread in alive.items():
            # A new thread often gets the ident of one that has ended (the C library reuses
            # its memory): the kernel's thread id tells them apart.
            if self._native_ids.get(ident) != thread.native_id:
                self._forget(ident)
                self.names[ident] = thread.name
                self._native_ids[ident] = thread.native_id
                self._stats[ident] = schedstat(thread.native_id or 0)
                self._clocks[ident] = cpu_clock(ident)

    def _forget(self, ident: int) -> None:
        self._clocks.pop(ident, None)
        self._native_ids.pop(ident, None)
        stat = self._stats.pop(ident, None)
        if stat is not None:
            stat.close()

    def take(self, *, full: bool = False) -> Snapshot:
        """The clocks now; ``full`` also reads the kernel's files and looks for new threads."""
        now = time.monotonic()
        if full or not self._clocks:
            self._watch_threads()
        readings = {ident: read_clock(clock) for ident, clock in self._clocks.items()}
        threads = {ident: cpu for ident, cpu in readings.items() if cpu is not None}
        light = Snapshot(now, threads, self.gc_timer.reading(now))
        if not full:
            return light
        counts = {ident: scheduling(stat) for ident, stat in self._stats.items()}
        known = {ident: reading for ident, reading in counts.items() if reading is not None}
        return dataclasses.replace(
            light,
            full=True,
            queued={ident: reading.queued for ident, reading in known.items()},
            wakeups={ident: float(reading.wakeups) for ident, reading in known.items()},
            throttled=self._throttled(),
            steal=self._steal(),
        )

    def _throttled(self) -> float | None:
        if self._throttle is None:
            return None
        counter, key, scale = self._throttle
        for line in (counter.read() or b"").splitlines():
            name, _, value = line.partition(b" ")
            if name == key:
                return int(value) * scale
        return None

    def _steal(self) -> float | None:
        text = self._proc_stat.read()
        try:
            ticks = int((text or b"").split(b"\n", 1)[0].split()[8])
        except (IndexError, ValueError):
            return None
        return ticks / _TICKS_PER_SECOND / self._cpus
