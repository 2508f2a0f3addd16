"""The service's lifecycle: STARTING -> SERVING -> DRAINING -> STOPPED, and the shutdown signals.

:class:`Runtime` owns everything that is not the network server: settings, lifecycle, stall
watchdog and offload pool. A transport's server module wires its server around it::

    runtime = Runtime(settings)
    runtime.install_signal_handlers(loop)   # first SIGTERM/SIGINT: drain; second: exit now
    ... start the server: it listens, so liveness answers during warm-up ...
    await runtime.start_async()             # watch the loop, warm up, then SERVING (ready)
    await runtime.wait_for_shutdown_async() # DRAINING: readiness is already false
    await asyncio.sleep(settings.drain_delay)
    ... stop the server, letting in-flight requests finish within settings.shutdown_grace ...
    await runtime.shutdown_async(remaining_grace)   # offload pool, watchdog, then STOPPED

Synchronous servers use ``start()``, ``wait_for_shutdown()`` and ``shutdown()`` instead.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from enum import StrEnum
from types import FrameType
from typing import Any, TypeVar

from .logging import get_logger
from .metrics import SERVICE_READY
from .offload import Offloader, install_offloader
from .settings import RuntimeSettings
from .stall import StallWatchdog

log = get_logger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often a blocked main thread wakes to run signal handlers (see Runtime.wait_for_shutdown).
_SIGNAL_POLL_INTERVAL = 0.2

T = TypeVar("T")


class State(StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


_ORDER = [State.STARTING, State.SERVING, State.DRAINING, State.STOPPED]

Listener = Callable[[State], None]


class Lifecycle:
    """The current :class:`State`; it only ever moves forward.

    Listeners are called with the new state on the thread that made the transition (and once
    with the current state when added), so a health service can follow it.
    """

    def __init__(self) -> None:
        self._state = State.STARTING
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._listeners: list[Listener] = []

    @property
    def state(self) -> State:
        return self._state

    @property
    def ready(self) -> bool:
        """Whether the service should get traffic: only while SERVING."""
        return self._state is State.SERVING

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)
            current = self._state
        listener(current)

    def transition(self, new: State) -> bool:
        """Move forward to ``new``; ``False`` (and no change) if already there or past it."""
        with self._lock:
            old = self._state
            if _ORDER.index(new) <= _ORDER.index(old):
                return False
            self._state = new
            listeners = list(self._listeners)
            self._changed.notify_all()
        log.info("lifecycle_transition", previous=old.value, state=new.value)
        for listener in listeners:
            listener(new)
        return True

    def wait_for(self, state: State, timeout: float | None = None) -> bool:
        """Block until ``state`` (or a later one) is reached; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: _ORDER.index(self._state) >= _ORDER.index(state), timeout
            )


class ShutdownSignals:
    """SIGTERM/SIGINT handling: the first calls ``on_first(name)``; a second exits at once.

    With an event loop the handlers run on the loop (``loop.add_signal_handler``); without
    one they are plain ``signal.signal`` handlers on the main thread and ``on_first`` must
    do no more than set a flag or an event.
    """

    def __init__(self, on_first: Callable[[str], None]) -> None:
        self._on_first = on_first
        self.received: str | None = None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        for signum in SHUTDOWN_SIGNALS:
            if loop is not None:
                loop.add_signal_handler(signum, self._handle, signum)
            else:
                signal.signal(signum, self._handle_sync)

    def _handle_sync(self, signum: int, _frame: FrameType | None) -> None:
        self._handle(signum)

    def _handle(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            _exit_now(name, 128 + signum)
        self.received = name
        self._on_first(name)


def _exit_now(name: str, status: int) -> None:
    """Leave immediately: no drain, no cleanup, one log line written without locks."""
    line = json.dumps({"event": "shutdown_forced", "level": "warning", "signal": name})
    os.write(sys.stdout.fileno(), (line + "\n").encode())
    os._exit(status)


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call on a new thread (never the loop's default executor) and await it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    outcome: Future[T] = Future()

    def target() -> None:
        try:
            outcome.set_result(fn(*args))
        except BaseException as error:  # re-raised on the loop, even SystemExit
            outcome.set_exception(error)
        loop.call_soon_threadsafe(lambda: None if done.done() else done.set_result(None))

    name = f"run-{getattr(fn, '__name__', 'call')}"
    threading.Thread(target=target, name=name, daemon=True).start()
    await done
    return outcome.result()


class Runtime:
    """Settings, lifecycle, stall watchdog and offload pool of one service process."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.lifecycle = Lifecycle()
        self.watchdog = StallWatchdog(
            settings.stall_threshold,
            lag_interval=settings.lag_interval,
            use_faulthandler=settings.stall_faulthandler,
            dump_path=settings.stall_dump_file,
        )
        self.offloader = Offloader(
            settings.offload_executor,
            workers=settings.offload_workers,
            queue_size=settings.offload_queue,
            timeout=settings.offload_timeout,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
        self.signals = ShutdownSignals(self._on_signal)
        self.shutdown_reason: str | None = None
        self._shutdown_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown_async: asyncio.Event | None = None
        self.lifecycle.add_listener(lambda state: SERVICE_READY.set(state is State.SERVING))

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog and warm up the offload pool, then become SERVING (ready).

        A pool that cannot start is logged and ends the process with status 1.
        """
        faulthandler.enable()  # a crash in C code still leaves a Python stack on stderr
        self.watchdog.start()
        try:
            self.offloader.start()
        except Exception:
            log.exception("startup_failed", reason="the offload pool did not start")
            self.watchdog.stop()
            raise SystemExit(1) from None
        install_offloader(self.offloader)
        if self.lifecycle.transition(State.SERVING):
            log.info("service_ready", pid=os.getpid())

    async def start_async(self) -> None:
        """:meth:`start` for asyncio servers: also watches this loop for stalls.

        The warm-up runs on a separate thread, so the loop keeps answering liveness probes.
        """
        loop = asyncio.get_running_loop()
        self._bind_loop(loop)
        self.watchdog.watch_loop(loop)
        await run_in_thread(self.start)

    # -- shutdown ----------------------------------------------------------------------------

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Handle SIGTERM/SIGINT: first one starts the drain, a second exits at once.

        Pass the loop for asyncio servers; without it, call from the main thread.
        """
        if loop is not None:
            self._bind_loop(loop)
        self.signals.install(loop)

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
            self._shutdown_async = asyncio.Event()
            if self._shutdown_requested.is_set():
                self._shutdown_async.set()

    def _on_signal(self, name: str) -> None:
        if self._loop is not None:
            self.request_shutdown(f"signal {name}")
        else:
            # A plain signal handler interrupts the main thread anywhere, even inside a
            # lifecycle transition: only record it; wait_for_shutdown() does the rest.
            self.shutdown_reason = self.shutdown_reason or f"signal {name}"
            self._shutdown_requested.set()

    def request_shutdown(self, reason: str) -> None:
        """Start draining: not ready from now on; wakes :meth:`wait_for_shutdown`."""
        self.shutdown_reason = self.shutdown_reason or reason
        if self.lifecycle.transition(State.DRAINING):
            log.info(
                "shutdown_requested",
                reason=self.shutdown_reason,
                drain_delay=self.settings.drain_delay,
                shutdown_grace=self.settings.shutdown_grace,
            )
        self._shutdown_requested.set()
        loop, event = self._loop, self._shutdown_async
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def wait_for_shutdown(self, timeout: float | None = None) -> bool:
        """Block until shutdown is requested (then DRAINING); ``False`` on timeout.

        Waits in short slices: the kernel may deliver SIGTERM to any thread (gRPC has many),
        and Python runs the handler only when the main thread next wakes up. A wait without
        a timeout could sleep through the signal forever.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._shutdown_requested.wait(_SIGNAL_POLL_INTERVAL):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        self.request_shutdown(self.shutdown_reason or "requested")
        return True

    async def wait_for_shutdown_async(self) -> None:
        """Wait until a signal (or :meth:`request_shutdown`) starts the drain."""
        if self._shutdown_async is None:
            self._bind_loop(asyncio.get_running_loop())
        assert self._shutdown_async is not None
        await self._shutdown_async.wait()

    def shutdown(self, grace: float | None = None) -> None:
        """Stop the offload pool (queued calls fail, running ones get ``grace`` seconds), the
        watchdog, and become STOPPED. Call after the server has stopped accepting requests.
        """
        self.lifecycle.transition(State.DRAINING)
        self.offloader.shutdown(self.settings.shutdown_grace if grace is None else grace)
        install_offloader(None)
        self.watchdog.stop()
        self.lifecycle.transition(State.STOPPED)
        log.info("service_stopped", reason=self.shutdown_reason)

    async def shutdown_async(self, grace: float | None = None) -> None:
        """:meth:`shutdown` without blocking the loop."""
        await run_in_thread(self.shutdown, grace)
