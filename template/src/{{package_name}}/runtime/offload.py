"""Run blocking or CPU-bound work away from the request path: ``await offload(fn, *args)``.

One bounded pool per service, of threads or of worker processes:

* Bounded admission: at most ``workers + queue`` calls are accepted at a time; the next one
  is rejected at once with :class:`OffloadRejected` (the transports answer 503 / gRPC
  RESOURCE_EXHAUSTED) instead of waiting in an unbounded queue.
* Request context travels with the call: threads run each call in a copy of the caller's
  contextvars; processes get the request id and traceparent as a plain dict and restore them,
  so a worker's log lines name the request they work for.
* Processes are started with forkserver (spawn where there is none), never fork. Each worker
  runs one call at a time over its own pipe, so a worker that dies (killed, segfault,
  ``os._exit``) fails only the call it held, with :class:`WorkerCrashed`, and is replaced.
* Timeouts: the caller stops waiting after ``timeout`` seconds (:class:`OffloadTimeout`). A
  process worker past its deadline is killed and replaced; a thread cannot be killed, so a
  timed-out thread runs on and keeps its slot until it returns.

The service's own threads are daemon threads: a call stuck past the shutdown grace cannot
keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import faulthandler
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any, Literal, ParamSpec, TypeVar, cast

from . import context
from .logging import configure_logging, get_logger
from .metrics import (
    OFFLOAD_DURATION,
    OFFLOAD_IN_FLIGHT,
    OFFLOAD_QUEUED,
    OFFLOAD_REJECTED,
    OFFLOAD_WORKER_CRASHES,
)
from .stall import waiting

P = ParamSpec("P")
T = TypeVar("T")
Executor = Literal["thread", "process"]

log = get_logger(__name__)

# How long a caller waits, after a process call's deadline, for the pool's own verdict (the
# worker is killed at the same deadline, which takes milliseconds).
_VERDICT_WAIT = 5.0


class OffloadError(Exception):
    """Base class of the errors raised by the offloader itself (not by the offloaded call)."""


class OffloadRejected(OffloadError):  # noqa: N818 - named for what happened to the call
    """Workers and queue are full (or the service is shutting down): retry later."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OffloadTimeout(OffloadError):  # noqa: N818
    """The call did not finish within its timeout."""


class WorkerCrashed(OffloadError):  # noqa: N818
    """The worker process running the call died; the pool has replaced it."""


class RemoteTraceback(Exception):  # noqa: N818 - only carries text, as in concurrent.futures
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _label(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


@dataclass(eq=False)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    label: str
    deadline: float | None
    context: contextvars.Context | None = None  # thread executor: run in this copy
    values: dict[str, str | None] = field(default_factory=dict)  # process executor: restore
    submitted: float = field(default_factory=time.monotonic)
    started: bool = False
    future: Future[Any] = field(default_factory=Future)

    def request_values(self) -> dict[str, str]:
        """The request-scoped values that are set, for log lines about this call."""
        return {key: value for key, value in self.values.items() if value is not None}


class Offloader:
    """A bounded pool of threads or processes. ``start()`` before use, ``shutdown()`` at the end."""

    def __init__(
        self,
        executor: Executor = "thread",
        *,
        workers: int = 1,
        queue_size: int = 0,
        timeout: float | None = None,
        log_level: str = "info",
        log_format: str = "json",
        start_timeout: float = 60.0,
    ) -> None:
        if executor not in ("thread", "process"):
            raise ValueError(f"unknown executor {executor!r}: use 'thread' or 'process'")
        if workers < 1 or queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        self.executor: Executor = executor
        self.workers = workers
        self.capacity = workers + queue_size
        self.timeout = timeout
        self._log_config = (log_level, log_format)
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._pending: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._admitted = 0
        self._running = 0
        self._accepting = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._processes: list[_ProcessWorker] = []
        self._in_flight_gauge = OFFLOAD_IN_FLIGHT.labels(executor=executor)
        self._queued_gauge = OFFLOAD_QUEUED.labels(executor=executor)
        self._rejected = OFFLOAD_REJECTED.labels(executor=executor)

    # -- state -------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Calls a worker is executing now."""
        return self._running

    @property
    def queued(self) -> int:
        """Calls accepted and waiting for a free worker."""
        return self._admitted - self._running

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until each has answered (readiness waits for this)."""
        if self._accepting or self._closed:
            return
        if self.executor == "process":
            mp_context = _process_context()
            self._processes = [
                _ProcessWorker(self, index, mp_context) for index in range(self.workers)
            ]
            try:
                for worker in self._processes:
                    worker.launch()
                for worker in self._processes:
                    worker.await_ready(self._start_timeout)
            except BaseException:
                for worker in self._processes:
                    worker.kill()
                raise
            targets = [worker.serve for worker in self._processes]
        else:
            targets = [self._serve_thread] * self.workers
        self._threads = [
            threading.Thread(target=target, name=f"offload-{self.executor}-{index}", daemon=True)
            for index, target in enumerate(targets)
        ]
        for thread in self._threads:
            thread.start()
        with self._lock:
            self._accepting = True
        log.info(
            "offload_started",
            executor=self.executor,
            workers=self.workers,
            capacity=self.capacity,
            timeout=self.timeout,
            worker_pids=[worker.pid for worker in self._processes] or None,
        )

    def shutdown(self, grace: float) -> None:
        """Reject new calls, fail queued ones, give running ones ``grace`` seconds, then stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._accepting = False
            dropped: list[_Call] = []
            while True:
                try:
                    call = self._pending.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    dropped.append(call)
            for _ in self._threads:
                self._pending.put(None)
        cancelled = 0
        for call in dropped:  # outside the lock: completing a call takes it
            if call.future.set_running_or_notify_cancel():
                call.future.set_exception(OffloadRejected("the service is shutting down"))
                cancelled += 1
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        abandoned = [thread.name for thread in self._threads if thread.is_alive()]
        if self._processes:
            for worker in self._processes:
                worker.stop_process()  # only workers still busy past the grace are alive here
            for thread in self._threads:
                thread.join(5.0)  # its feeder fails the call it held, then ends
        log.info(
            "offload_stopped",
            executor=self.executor,
            cancelled_queued=cancelled,
            unfinished=abandoned or None,
        )

    # -- calling -----------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker with the default timeout; await its result."""
        return await self.run_with_timeout(self.timeout, fn, *args, **kwargs)

    async def run_with_timeout(
        self,
        timeout: float | None,  # noqa: ASYNC109 - it also bounds the worker, not just the wait
        fn: Callable[P, T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like :meth:`run`, with this call's own timeout (``None``: no limit)."""
        call = self._submit(fn, args, kwargs, timeout)
        waiter = asyncio.wrap_future(call.future)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            if not done and self._verdict_pending(call):
                done, _ = await asyncio.wait({waiter}, timeout=_VERDICT_WAIT)
        except asyncio.CancelledError:
            waiter.cancel()  # a call still in the queue is dropped; a running one runs out
            raise
        if not done:
            waiter.cancel()
            raise self._timed_out(call, timeout)
        return cast(T, waiter.result())

    def run_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Blocking :meth:`run`, for synchronous code (gRPC sync handlers)."""
        return self.run_sync_with_timeout(self.timeout, fn, *args, **kwargs)

    def run_sync_with_timeout(
        self, timeout: float | None, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Blocking :meth:`run_with_timeout`."""
        call = self._submit(fn, args, kwargs, timeout)
        with waiting():
            done, _ = wait({call.future}, timeout)
            if not done and self._verdict_pending(call):
                done, _ = wait({call.future}, _VERDICT_WAIT)
        if not done:
            call.future.cancel()
            raise self._timed_out(call, timeout)
        return cast(T, call.future.result())

    def _verdict_pending(self, call: _Call) -> bool:
        """A process call that was running at its deadline: its worker is being killed now."""
        return self.executor == "process" and call.started

    def _timed_out(self, call: _Call, timeout: float | None) -> OffloadTimeout:
        if not call.started:
            return OffloadTimeout(
                f"{call.label} was still waiting for a free worker after {timeout} s; dropped"
            )
        return OffloadTimeout(
            f"{call.label} did not finish within {timeout} s; a thread cannot be stopped, "
            "so it runs on and occupies its worker until it returns"
        )

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> _Call:
        call = _Call(
            fn,
            args,
            dict(kwargs),
            _label(fn),
            None if timeout is None else time.monotonic() + timeout,
        )
        if self.executor == "thread":
            call.context = contextvars.copy_context()
        else:
            call.values = context.snapshot()
        with self._lock:
            if not self._accepting:
                reason = "shutting down" if self._closed else "not started"
                raise OffloadRejected(f"the offloader is {reason}")
            if self._admitted >= self.capacity:
                self._rejected.inc()
                raise OffloadRejected(
                    f"all {self.workers} offload workers are busy and "
                    f"{self.capacity - self.workers} calls are queued"
                )
            self._admitted += 1
            self._queued_gauge.set(self._admitted - self._running)
            self._pending.put(call)
        call.future.add_done_callback(lambda _: self._finished(call))
        return call

    # -- bookkeeping (called from worker threads) --------------------------------------------

    def _take(self) -> _Call | None:
        """The next call to execute, or ``None`` when the pool is stopping."""
        while True:
            call = self._pending.get()
            if call is None:
                return None
            if call.future.set_running_or_notify_cancel():
                with self._lock:
                    call.started = True
                    self._running += 1
                    self._in_flight_gauge.set(self._running)
                    self._queued_gauge.set(self._admitted - self._running)
                return call

    def _finished(self, call: _Call) -> None:
        with self._lock:
            self._admitted -= 1
            if call.started:
                self._running -= 1
            self._in_flight_gauge.set(self._running)
            self._queued_gauge.set(self._admitted - self._running)
        future = call.future
        if future.cancelled():
            outcome = "cancelled"
        else:
            error = future.exception()
            outcome = "ok" if error is None else _outcome(error)
        OFFLOAD_DURATION.labels(executor=self.executor, outcome=outcome).observe(
            time.monotonic() - call.submitted
        )

    def _serve_thread(self) -> None:
        while (call := self._take()) is not None:
            assert call.context is not None
            try:
                result = call.context.run(call.fn, *call.args, **call.kwargs)
            except BaseException as error:  # handed to the caller
                call.future.set_exception(error)
            else:
                call.future.set_result(result)
            del call


def _outcome(error: BaseException) -> str:
    if isinstance(error, WorkerCrashed):
        return "crashed"
    if isinstance(error, OffloadTimeout):
        return "timeout"
    if isinstance(error, OffloadRejected):
        return "cancelled"
    return "error"


def _process_context() -> BaseContext:
    """forkserver where it exists (Linux), else spawn; never fork (threads, gRPC)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    mp_context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers fork from a server that has already imported the runtime: they start fast.
        mp_context.set_forkserver_preload([__name__])
    return mp_context


def _exit_description(exitcode: int | None) -> str:
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


class _ProcessWorker:
    """The parent's side of one worker process: a thread that feeds it one call at a time."""

    def __init__(self, pool: Offloader, index: int, mp_context: BaseContext) -> None:
        self._pool = pool
        self._index = index
        self._mp = mp_context
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        parent_end, child_end = self._mp.Pipe(duplex=True)
        process = self._mp.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(child_end, *self._pool._log_config),
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
        if self._conn in ready:
            try:
                if self._conn.recv() == "ready":
                    return
            except (EOFError, OSError):
                pass
        if self._process.is_alive():
            problem = f"did not answer within {timeout} s"
        else:
            self._process.join(1.0)
            problem = _exit_description(self._process.exitcode)
        self.kill()
        raise RuntimeError(f"offload worker {self._index} {problem} while starting")

    def replace(self, reason: str) -> None:
        self.kill()
        OFFLOAD_WORKER_CRASHES.labels(reason=reason).inc()
        if self._pool._closed:
            return
        try:
            self.launch()
            self.await_ready(self._pool._start_timeout)
        except Exception:
            log.exception("offload_worker_restart_failed", worker=self._index)
            self._process = self._conn = None

    def stop_process(self) -> None:
        """Kill the worker process; its feeder thread notices and fails the call it held."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(5.0)
        if self._conn is not None:
            self._conn.close()

    def serve(self) -> None:
        while (call := self._pool._take()) is not None:
            self._execute(call)
            del call
        if self._conn is not None and self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)  # ask the worker to exit; it is idle
            self._process.join(5.0)
        self.kill()

    def _execute(self, call: _Call) -> None:
        if self._process is None or self._conn is None or not self._process.is_alive():
            self.replace("dead")
        process, conn = self._process, self._conn
        if process is None or conn is None:
            call.future.set_exception(WorkerCrashed("no offload worker process could be started"))
            return
        if not self._send(conn, call):
            return
        remaining = None if call.deadline is None else max(0.0, call.deadline - time.monotonic())
        ready = multiprocessing.connection.wait([conn, process.sentinel], remaining)
        if conn in ready and self._receive(conn, call):
            return
        if ready:
            self._crashed(process, call)
            return
        self.kill()  # past its deadline: the only way to stop running Python code
        call.future.set_exception(
            OffloadTimeout(
                f"{call.label} did not finish in time; its worker process (pid {process.pid}) "
                "was killed and is being replaced"
            )
        )
        log.warning(
            "offload_worker_timed_out",
            function=call.label,
            pid=process.pid,
            **call.request_values(),
        )
        self.replace("timeout")

    def _send(self, conn: multiprocessing.connection.Connection, call: _Call) -> bool:
        """Hand the call to the worker; ``False`` if it cannot be sent (the caller is told)."""
        try:
            conn.send((call.fn, call.args, call.kwargs, call.values))
        except (BrokenPipeError, ConnectionResetError):
            return True  # the worker is gone: noticed while waiting, like a crash
        except Exception as error:  # not picklable: tell the caller why
            failure = OffloadError(
                f"cannot send {call.label} to a worker process: {error} (offloaded functions "
                "and their arguments must be picklable: use module-level functions)"
            )
            failure.__cause__ = error
            call.future.set_exception(failure)
            return False
        return True

    def _receive(self, conn: multiprocessing.connection.Connection, call: _Call) -> bool:
        """Complete the call from the worker's reply; ``False`` if the worker died instead."""
        try:
            status, payload, remote_tb = conn.recv()
        except (EOFError, OSError):
            return False
        except Exception as error:  # an unpicklable result or exception
            call.future.set_exception(
                OffloadError(f"the result of {call.label} could not be received: {error}")
            )
            return True
        if status == "ok":
            call.future.set_result(payload)
        else:
            payload.__cause__ = RemoteTraceback(remote_tb)
            call.future.set_exception(payload)
        return True

    def _crashed(self, process: multiprocessing.process.BaseProcess, call: _Call) -> None:
        process.join(1.0)
        description = _exit_description(process.exitcode)
        if self._pool._closed:
            message = f"the service shut down before {call.label} finished"
        else:
            message = (
                f"the offload worker process (pid {process.pid}) {description} while running "
                f"{call.label}; it is being replaced"
            )
            log.error(
                "offload_worker_crashed",
                function=call.label,
                pid=process.pid,
                detail=description,
                **call.request_values(),
            )
        call.future.set_exception(WorkerCrashed(message))
        self.replace("shutdown" if self._pool._closed else "crash")


def _worker_main(
    conn: multiprocessing.connection.Connection, log_level: str, log_format: str
) -> None:
    """The loop of a worker process: receive a call, run it in its request context, reply."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()  # a segfault leaves a Python stack on stderr
    configure_logging(log_level, log_format, fields={"worker_pid": os.getpid()})
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        except Exception as error:  # e.g. the function cannot be imported here
            _reply(conn, "error", error)
            continue
        if message is None:
            return
        fn, args, kwargs, values = message
        try:
            with context.restore(values):
                result = fn(*args, **kwargs)
        except BaseException as error:  # handed to the caller
            _reply(conn, "error", error)
        else:
            _reply(conn, "ok", result)
        del message, fn, args, kwargs


def _reply(conn: multiprocessing.connection.Connection, status: str, payload: Any) -> None:
    remote_tb = ""
    if isinstance(payload, BaseException):
        remote_tb = "".join(traceback.format_exception(payload))
        payload.__traceback__ = None
    try:
        conn.send((status, payload, remote_tb))
    except Exception as error:  # the result or exception is not picklable
        kind = "result" if status == "ok" else f"exception {type(payload).__name__}: {payload}"
        conn.send(("error", OffloadError(f"cannot send the {kind} back: {error}"), remote_tb))


# -- the process-wide offloader business code uses -------------------------------------------

_installed: Offloader | None = None


def install_offloader(offloader: Offloader | None) -> None:
    """Make ``offloader`` the one :func:`offload` and :func:`offload_sync` use."""
    global _installed  # noqa: PLW0603 - one offloader per process, set at start-up
    _installed = offloader


def current_offloader() -> Offloader:
    """The process-wide offloader; the runtime installs it at start-up."""
    if _installed is None:
        raise RuntimeError("no offloader is running: the runtime starts one at start-up")
    return _installed


async def offload(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in the service's offload pool and await the result.

    Raises :class:`OffloadRejected` at once when the pool is full, :class:`OffloadTimeout`
    after the configured timeout, :class:`WorkerCrashed` if its worker process died.
    """
    return await current_offloader().run(fn, *args, **kwargs)


def offload_sync(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Blocking :func:`offload`, for synchronous handlers."""
    return current_offloader().run_sync(fn, *args, **kwargs)
