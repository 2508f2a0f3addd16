"""The offload pool: admission, deadlines, cancellation and shutdown around one executor.

The pool, not the waiting caller, enforces each call's queue time, run time (counted from its
start, so time queued does not eat into it) and request deadline: docs/runtime/offloading.md.
Stopping a call kills its worker process (a new one replaces it) or, for threads, answers the
caller and abandons the thread. The same happens when the caller goes away.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast

from .. import context
from ..logging import get_logger
from ..stall import waiting
from . import metrics
from .admission import Admission
from .cancellation import current_scope
from .errors import OffloadCancelled, OffloadRejected, OffloadTimeout, WorkerCrashed
from .job import Job, label_of
from .processes import ProcessWorker, start_process_workers, stop_process_workers
from .threads import start_worker_threads

if TYPE_CHECKING:
    from ..settings import RuntimeSettings

P = ParamSpec("P")
T = TypeVar("T")
Executor = Literal["thread", "process"]

log = get_logger(__name__)

# At most one "offload_saturated" line per this many seconds: overload must not flood the log.
_SATURATION_LOG_INTERVAL = 10.0


class Offloader:
    """A bounded pool of threads or processes. ``start()`` before use, ``shutdown()`` at the end."""

    def __init__(
        self,
        executor: Executor = "thread",
        *,
        workers: int = 1,
        queue_size: int = 0,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        min_remaining: float = 0.0,
        worker_nice: int = 0,
        log_level: str = "info",
        log_format: str = "json",
    ) -> None:
        if executor not in ("thread", "process"):
            raise ValueError(f"unknown executor {executor!r}: use 'thread' or 'process'")
        if workers < 1 or queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        self.executor: Executor = executor
        self.workers = workers
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.worker_args = (log_level, log_format, worker_nice)  # for worker_process.worker_main
        self.admission = Admission(workers, queue_size, min_remaining)
        self._threads: list[threading.Thread] = []
        self._processes: list[ProcessWorker] = []
        self.abandoned = 0  # threads still running a call whose caller was answered already
        self._last_saturation_log = -_SATURATION_LOG_INTERVAL
        self._keeper = threading.Thread(
            target=self._keep_deadlines, name="offload-deadlines", daemon=True
        )
        self._rejected = metrics.REJECTED.labels(executor=executor)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> Offloader:
        return cls(
            settings.offload_executor,
            workers=settings.offload_workers,
            queue_size=settings.offload_queue,
            timeout=settings.offload_timeout,
            queue_timeout=settings.offload_queue_timeout,
            min_remaining=settings.offload_min_remaining,
            worker_nice=settings.offload_worker_nice,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )

    @property
    def running(self) -> int:
        """Worker slots busy now (abandoned threads included)."""
        return len(self.admission.running)

    @property
    def queued(self) -> int:
        return len(self.admission.queue)

    def start(self) -> None:
        """Start every worker and wait until each has answered (readiness waits for this)."""
        if self.admission.accepting or self.admission.closed:
            return
        if self.executor == "process":
            self._processes = start_process_workers(self)
        else:
            self._threads = start_worker_threads(self)
        self._keeper.start()
        labels = {"executor": self.executor}
        metrics.WORKERS.labels(**labels).set(self.workers)
        metrics.RUN_LIMIT.labels(**labels).set(self.timeout or 0)
        # The gauges of what changes are read when scraped: never stale, nothing to update.
        metrics.OLDEST_RUNNING.labels(**labels).set_function(self.admission.oldest_running_age)
        metrics.IN_FLIGHT.labels(**labels).set_function(lambda: self.running)
        metrics.QUEUED.labels(**labels).set_function(lambda: self.queued)
        metrics.ABANDONED_THREADS.labels(**labels).set_function(lambda: self.abandoned)
        with self.admission.lock:
            self.admission.accepting = True
        log.info(
            "offload_started",
            executor=self.executor,
            workers=self.workers,
            capacity=self.admission.capacity,
            timeout=self.timeout,
            queue_timeout=self.queue_timeout,
            worker_pids=[worker.pid for worker in self._processes] or None,
        )

    def shutdown(self, grace: float) -> None:
        """Reject new calls, fail queued ones, give running ones ``grace`` seconds, then stop."""
        if self.admission.closed:
            return
        dropped = self.admission.close()
        for job in dropped:
            job.drop(OffloadRejected("the service is shutting down"))
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = [thread.name for thread in self._threads if thread.is_alive()]
        stop_process_workers(self._processes, deadline)
        if self._keeper.ident is not None:  # not started if the workers failed to start
            self._keeper.join(1.0)
        log.info(
            "offload_stopped",
            executor=self.executor,
            cancelled_queued=len(dropped),
            unfinished=unfinished or None,
        )

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` in a worker; cancelling the task drops or stops it."""
        job = self._submit(fn, args, kwargs)
        try:
            return cast(T, await asyncio.wrap_future(job.future))
        except asyncio.CancelledError:
            self.abandon(job)
            raise

    def run_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Blocking :meth:`run` (gRPC sync handlers); cancelling a :func:`cancel_scope` stops it."""
        job = self._submit(fn, args, kwargs)
        scope = current_scope()
        if scope is not None:
            scope.track(self, job)
        try:
            with waiting():
                return cast(T, job.future.result())
        finally:
            if scope is not None:
                scope.untrack(job)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Job:
        label = label_of(fn)
        now = time.monotonic()
        deadline = context.current_deadline()
        if deadline is not None and deadline - now < self.admission.min_remaining:
            metrics.TIMED_OUT.labels(executor=self.executor, stage="not_started").inc()
            raise OffloadTimeout(
                f"{label} was not started: the request has {max(0.0, deadline - now):.3f} s "
                f"left, less than the {self.admission.min_remaining} s floor"
            )
        queue_limits = [t for t in (deadline, self.queue_timeout and now + self.queue_timeout) if t]
        job = Job(
            fn,
            args,
            kwargs,  # a fresh dict: ``**kwargs`` made it for this call
            label,
            deadline=deadline,
            queue_deadline=min(queue_limits) if queue_limits else None,
            run_limit=self.timeout,
            context=contextvars.copy_context() if self.executor == "thread" else None,
            values=context.snapshot(),
            submitted=now,
        )
        try:
            self.admission.admit(job)
        except OffloadRejected:
            self._rejected.inc()
            self._note_saturation()
            raise
        job.future.add_done_callback(lambda _: self._observe(job))
        return job

    def _note_saturation(self) -> None:
        now = time.monotonic()
        if now - self._last_saturation_log < _SATURATION_LOG_INTERVAL:
            return
        self._last_saturation_log = now
        log.warning(
            "offload_saturated",
            executor=self.executor,
            running=self.running,
            queued=self.queued,
            abandoned_threads=self.abandoned or None,
            oldest_running_seconds=round(self.admission.oldest_running_age(), 3),
        )

    def _observe(self, job: Job) -> None:
        if job.future.cancelled():
            outcome = "cancelled"
        elif (error := job.future.exception()) is None:
            outcome = "ok"
        elif isinstance(error, WorkerCrashed):
            outcome = "crashed"
        elif isinstance(error, OffloadTimeout):
            outcome = "timeout"
        elif isinstance(error, OffloadCancelled | OffloadRejected):
            outcome = "cancelled"
        else:
            outcome = "error"
        metrics.DURATION.labels(executor=self.executor, outcome=outcome).observe(
            time.monotonic() - job.submitted
        )

    def abandon(self, job: Job) -> None:
        """The caller went away: drop ``job`` if queued, stop it if running."""
        if self.admission.withdraw(job):
            job.drop(OffloadCancelled(f"the caller of {job.label} went away; dropped"))
            metrics.CANCELLED.labels(executor=self.executor, stage="queued").inc()
            return
        self._stop(job, "cancelled")

    def _stop(self, job: Job, reason: str) -> None:
        """Stop a running call: kill its worker process, or abandon its thread."""
        with self.admission.lock:
            if job.stop_reason is not None or job.future.done() or job.started is None:
                return
            job.stop_reason = reason
        stage = {"executor": self.executor, "stage": "running"}
        (metrics.TIMED_OUT if reason == "timeout" else metrics.CANCELLED).labels(**stage).inc()
        if self.executor == "process":
            for worker in self._processes:
                worker.stop(job)
            return
        with self.admission.lock:
            self.abandoned += 1
        job.settle(error=self._stopped_error(job, "its thread cannot be stopped and runs on"))
        log.warning(
            "offload_thread_abandoned",
            function=job.label,
            reason=reason,
            ran_seconds=round(job.ran_for(), 3),
            abandoned_threads=self.abandoned,
            **job.request_values(),
        )

    def report_stopped(self, job: Job, pid: int | None) -> Exception:
        """A process worker was killed to stop ``job``: log it; the error for its caller."""
        metrics.KILLED.labels(executor=self.executor, reason=job.stop_reason or "").inc()
        log.warning(
            "offload_call_killed",
            function=job.label,
            reason=job.stop_reason,
            ran_seconds=round(job.ran_for(), 3),
            pid=pid,
            **job.request_values(),
        )
        return self._stopped_error(job, f"its worker process (pid {pid}) was killed")

    def _stopped_error(self, job: Job, what_happened: str) -> Exception:
        ran = f"{job.ran_for():.3f}"
        if job.stop_reason == "cancelled":
            return OffloadCancelled(
                f"the caller of {job.label} went away after {ran} s; {what_happened}"
            )
        return OffloadTimeout(f"{job.label} did not finish in time ({ran} s); {what_happened}")

    def _keep_deadlines(self) -> None:
        """Drop queued calls past their queue deadline; stop running calls past their run one."""
        admission = self.admission
        while True:
            with admission.lock:
                if admission.closed and not admission.running:
                    return
                now = time.monotonic()
                expired, overdue, next_deadline = admission.overdue(now)
                if not expired and not overdue:
                    wait = None if next_deadline is None else next_deadline - now
                    admission.changed.wait(1.0 if admission.closed else wait)
                    continue
            for job in expired:
                waited = time.monotonic() - job.submitted
                message = f"{job.label} waited {waited:.3f} s for a free worker and was dropped"
                job.drop(OffloadTimeout(message))
                metrics.TIMED_OUT.labels(executor=self.executor, stage="queued").inc()
            for job in overdue:
                self._stop(job, "timeout")

    def next_job(self) -> Job | None:
        """The next call for a worker to run, or ``None`` when the pool is closing."""
        while (job := self.admission.next_job()) is not None and job.started is None:
            message = f"{job.label} was not started: its request had too little time left"
            job.drop(OffloadTimeout(message))
            metrics.TIMED_OUT.labels(executor=self.executor, stage="not_started").inc()
        return job

    def complete(self, job: Job, result: Any, error: BaseException | None) -> None:
        """The worker that ran ``job`` is free again: give back its place, then answer the
        caller (in that order, so a caller that calls again at once finds the place free).
        """
        self.admission.finish(job, succeeded=error is None and job.stop_reason is None)
        if self.executor == "thread" and job.stop_reason is not None:
            with self.admission.lock:
                self.abandoned -= 1
            log.info(
                "offload_abandoned_thread_returned",
                function=job.label,
                ran_seconds=round(job.ran_for(), 3),
                **job.request_values(),
            )
        job.settle(result, error)
