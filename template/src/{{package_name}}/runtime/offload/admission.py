"""Who gets a worker: a bounded queue, the slots in use, and which calls are not worth starting.

At most ``capacity`` calls hold a place at a time, queued or running. A place is given back when
its worker is free again, not when the caller stops waiting: a thread that runs on after its
caller gave up still holds its place, so the pool never promises more than it has.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .errors import OffloadRejected
from .job import Job

# How many recent runs of a function its best-case duration is taken from. The fastest of them,
# not an average: a call is refused only if it could not finish even at that speed, so a slow
# call with a big input never gets a later small one refused.
_RECENT_RUNS = 16


class Admission:
    """The queue and slot counts of one pool; every method is safe from any thread."""

    def __init__(self, workers: int, queue_size: int, min_remaining: float) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self.min_remaining = min_remaining
        self.lock = threading.Lock()
        self.job_ready = threading.Condition(self.lock)  # workers wait here
        self.changed = threading.Condition(self.lock)  # the deadline keeper waits here
        self.queue: deque[Job] = deque()  # read without the lock only to count
        self.running: set[Job] = set()
        self._recent: dict[str, deque[float]] = {}
        self.accepting = False
        self.closed = False

    def admit(self, job: Job) -> None:
        """Queue ``job``, or raise :class:`OffloadRejected` at once if there is no place."""
        with self.lock:
            if not self.accepting:
                reason = "shutting down" if self.closed else "not started"
                raise OffloadRejected(f"the offloader is {reason}")
            if len(self.queue) + len(self.running) >= self.capacity:
                raise OffloadRejected(
                    f"all {self.workers} offload workers are busy and "
                    f"{self.capacity - self.workers} calls are queued"
                )
            if self._too_late(job, time.monotonic()):
                raise OffloadRejected(
                    f"{job.label} could not finish before its request's deadline "
                    "even if it started now"
                )
            self.queue.append(job)
            self.job_ready.notify()
            self.changed.notify()

    def next_job(self) -> Job | None:
        """Block until a call is due and return it: marked running (``started`` set), or, if it
        is too late to be worth starting, unstarted for the caller to fail (starting it would
        cost a worker killed at the deadline). ``None`` when the pool is closing.
        """
        with self.lock:
            while True:
                while not self.queue and not self.closed:
                    self.job_ready.wait()
                if not self.queue:
                    return None
                job = self.queue.popleft()
                now = time.monotonic()
                if self._too_late(job, now):
                    return job
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued: nothing to run
                job.start(now)
                self.running.add(job)
                self.changed.notify()
                return job

    def _too_late(self, job: Job, now: float) -> bool:
        """Whether ``job``'s request has less time left than the floor, or than its function's
        fastest recent run. Not the queue ahead: its wait is not known (docs/runtime/offloading.md).
        """
        if job.deadline is None:
            return False
        recent = self._recent.get(job.label)
        return job.deadline - now < max(self.min_remaining, min(recent) if recent else 0.0)

    def withdraw(self, job: Job) -> bool:
        """Remove a call that is still queued; ``False`` if it has started (or is gone)."""
        with self.lock:
            try:
                self.queue.remove(job)
            except ValueError:
                return False
            return True

    def finish(self, job: Job, *, succeeded: bool) -> None:
        """The worker that ran ``job`` is free again."""
        with self.lock:
            self.running.discard(job)
            if succeeded and job.started is not None:
                recent = self._recent.setdefault(job.label, deque(maxlen=_RECENT_RUNS))
                recent.append(time.monotonic() - job.started)
            self.changed.notify()

    def close(self) -> list[Job]:
        """Stop accepting; the queued calls are returned to be failed."""
        with self.lock:
            self.accepting = False
            self.closed = True
            dropped = list(self.queue)
            self.queue.clear()
            self.job_ready.notify_all()
            self.changed.notify_all()
            return dropped

    def overdue(self, now: float) -> tuple[list[Job], list[Job], float | None]:
        """Queued calls past their queue deadline (removed), running calls past their run
        deadline, and when the next deadline falls. Call with the lock held.
        """
        expired = [job for job in self.queue if job.queue_deadline and job.queue_deadline <= now]
        for job in expired:
            self.queue.remove(job)
        running = [job for job in self.running if job.stop_reason is None]
        overdue = [job for job in running if job.run_deadline and job.run_deadline <= now]
        # Only read when nothing is overdue: every deadline left is then still to come.
        upcoming = [job.queue_deadline for job in self.queue]
        upcoming += [job.run_deadline for job in running]
        return expired, overdue, min(filter(None, upcoming), default=None)

    def oldest_running_age(self) -> float:
        """Seconds the longest-running call has been running (0 when none runs)."""
        with self.lock:
            starts = [job.started for job in self.running if job.started is not None]
        return time.monotonic() - min(starts) if starts else 0.0
