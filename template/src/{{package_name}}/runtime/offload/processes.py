"""The parent's side of the worker processes: one feeder thread per worker, one call at a time.

Each worker has its own pipe, so a worker that dies (killed, segfault, ``os._exit``) fails only
the call it held. Killing the worker is also how a running call is stopped when its caller goes
away or its time runs out: running Python code cannot be interrupted any other way.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from ..logging import get_logger
from . import metrics
from .errors import OffloadError, RemoteTraceback, WorkerCrashed
from .job import Job
from .spans import record_killed
from .worker_process import worker_main

if TYPE_CHECKING:
    from .pool import Offloader

log = get_logger(__name__)

START_TIMEOUT = 60.0  # seconds a new worker process may take to answer


def process_context() -> BaseContext:
    """forkserver where it exists (Linux), else spawn; never fork (threads, gRPC)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    mp_context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers fork from a server that has already imported the runtime: they start fast.
        mp_context.set_forkserver_preload([worker_main.__module__])
    return mp_context


def exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "vanished"
    if exitcode == -signal.SIGKILL:
        return "was killed by SIGKILL (the OOM killer sends it too)"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class ProcessWorker:
    """One worker process and the thread that feeds it."""

    def __init__(self, pool: Offloader, index: int, mp_context: BaseContext) -> None:
        self._pool = pool
        self._index = index
        self._mp = mp_context
        self._lock = threading.Lock()  # guards ``current`` against a concurrent stop()
        self._process: BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self.current: Job | None = None
        self.thread = threading.Thread(
            target=self.serve, name=f"offload-feeder-{index}", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        parent_end, child_end = self._mp.Pipe(duplex=True)
        process = self._mp.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_end, *self._pool.worker_args),
            name=f"offload-worker-{self._index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        self._process, self._conn = process, parent_end

    def await_ready(self, timeout: float) -> None:
        assert self._process is not None
        assert self._conn is not None
        ready = multiprocessing.connection.wait([self._conn, self._process.sentinel], timeout)
        with contextlib.suppress(EOFError, OSError):
            if self._conn in ready and self._conn.recv() == "ready":
                return
        if self._process.is_alive():
            problem = f"did not answer within {timeout} s"
        else:
            self._process.join(1.0)
            problem = exit_description(self._process.exitcode)
        self.kill()
        raise RuntimeError(f"offload worker {self._index} {problem} while starting")

    def stop(self, job: Job | None = None) -> None:
        """Kill the worker if it runs ``job`` (``None``: any call); the feeder then replaces it."""
        with self._lock:
            if (job is None or self.current is job) and self._process is not None:
                self._process.kill()

    def kill(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5.0)
        if self._conn is not None:
            self._conn.close()

    def _replace(self, reason: str) -> None:
        self.kill()
        metrics.WORKER_CRASHES.labels(executor="process", reason=reason).inc()
        if self._pool.admission.closed:
            return
        try:
            self.launch()
            self.await_ready(START_TIMEOUT)
        except Exception:
            log.exception("offload_worker_restart_failed", worker=self._index)
            self._process = self._conn = None

    def serve(self) -> None:
        while (job := self._pool.next_job()) is not None:
            with self._lock:
                self.current = job
            result, error, replace = self._execute(job)
            with self._lock:
                self.current = None
            self._pool.complete(job, result, error)
            if replace is not None:
                self._replace(replace)  # after answering: a respawn can take seconds
            del job, result, error
        if self._conn is not None and self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)  # ask the worker to exit; it is idle
            self._process.join(5.0)
        self.kill()

    def _execute(self, job: Job) -> tuple[Any, BaseException | None, str | None]:
        """Run ``job`` in the worker: its result, or the error for its caller, and why the
        worker must be replaced (``None`` if it is fine).
        """
        if self._process is None or self._conn is None or not self._process.is_alive():
            self._replace("dead")
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return None, WorkerCrashed("no offload worker process could be started"), None
        try:
            conn.send((job.fn, job.args, job.kwargs, job.values, job.submitted_ns))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker is gone: noticed while waiting, like a crash
        except Exception as error:  # not picklable: tell the caller why
            failure = OffloadError(
                f"cannot send {job.label} to a worker process: {error} (offloaded functions "
                "and their arguments must be picklable: use module-level functions)"
            )
            failure.__cause__ = error
            return None, failure, None
        job.release()  # the worker has its own copy now
        if conn in multiprocessing.connection.wait([conn, process.sentinel]):
            try:
                status, payload, remote_tb = conn.recv()
            except (EOFError, OSError):
                pass  # it died while replying
            except Exception as error:  # an unpicklable result or exception
                failure = OffloadError(f"the result of {job.label} could not be received: {error}")
                return None, failure, None
            else:
                if status == "ok":
                    return payload, None, None
                payload.__cause__ = RemoteTraceback(remote_tb)
                return None, payload, None
        return self._ended(process, job)

    def _ended(self, process: BaseProcess, job: Job) -> tuple[None, BaseException, str]:
        """The worker died while running ``job``: killed by us on purpose, or crashed."""
        process.join(1.0)
        self.kill()
        reason = job.stop_reason or ("shutdown" if self._pool.admission.closed else "crash")
        record_killed(job, process.pid, reason)
        if job.stop_reason is not None:
            return None, self._pool.report_stopped(job, pid=process.pid), job.stop_reason
        if self._pool.admission.closed:
            error = WorkerCrashed(f"the service shut down before {job.label} finished")
            return None, error, "shutdown"
        description = exit_description(process.exitcode)
        log.error(
            "offload_worker_crashed",
            function=job.label,
            pid=process.pid,
            detail=description,
            **job.request_values(),
        )
        error = WorkerCrashed(
            f"the offload worker process (pid {process.pid}) {description} while running "
            f"{job.label}; it is being replaced"
        )
        return None, error, "crash"


def start_process_workers(pool: Offloader) -> list[ProcessWorker]:
    mp_context = process_context()
    workers = [ProcessWorker(pool, index, mp_context) for index in range(pool.workers)]
    try:
        for worker in workers:
            worker.launch()
        for worker in workers:
            worker.await_ready(START_TIMEOUT)
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    for worker in workers:
        worker.thread.start()
    return workers


def stop_process_workers(workers: list[ProcessWorker], deadline: float) -> None:
    """At ``deadline``: kill the workers still busy; their feeders fail the calls they held."""
    for worker in workers:
        worker.thread.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.thread.join(5.0)
