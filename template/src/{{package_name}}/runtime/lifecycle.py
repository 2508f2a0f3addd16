"""The service's lifecycle: STARTING -> SERVING -> DRAINING -> STOPPED.

:class:`Runtime` owns everything that is not the network server: settings, lifecycle, signals,
stall watchdog and offload pool. Every transport's ``serve()`` runs the same sequence around it:

    runtime = Runtime(settings, loop)        # signals handled from here on
    ... listen: liveness answers, not ready yet ...
    warm_up = in_thread(runtime.start)       # watchdog and offload pool, off the main thread
    ... enter the user's resources (resources.py) ...
    warm_up.result(); runtime.ready()        # SERVING, unless a signal came first
    runtime.wait_for_shutdown()              # DRAINING: readiness is false from here on
    ... drain delay, stop accepting, grace, leave the user's resources ...
    runtime.stop(grace_left)                 # offload pool, watchdog, STOPPED, flush spans

Every method blocks; asyncio servers run the waiting ones with :func:`in_thread`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from enum import StrEnum
from typing import Any, TypeVar

from . import tracing
from .logging import get_logger
from .metrics import SERVICE_READY
from .offload import Offloader, install_offloader
from .settings import RuntimeSettings
from .signals import Signals
from .stall import StallWatchdog

log = get_logger(__name__)

T = TypeVar("T")

# A request allocates a few hundred objects, nearly all freed again by reference counting. At
# CPython's default of 700, the collector ran about once a request, going through the objects
# of every request in flight each time; at 10,000 it runs a fourteenth as often, each run
# about 0.2 ms even when all 10,000 objects are still alive.
YOUNG_COLLECTION_EVERY = 10_000


class State(StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


_ORDER = list(State)

Listener = Callable[[State], None]


class StartupError(Exception):
    """The service cannot start; the message says why. ``serve()`` logs it and exits 1."""


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


def in_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run a blocking call on a new thread (never the loop's default executor).

    ``Future.result()`` waits for it; asyncio code awaits ``asyncio.wrap_future(...)``.
    """
    outcome: Future[T] = Future()

    def target() -> None:
        try:
            outcome.set_result(fn(*args))
        except BaseException as error:  # re-raised by result(), even SystemExit
            outcome.set_exception(error)

    name = f"run-{getattr(fn, '__name__', 'call')}"
    threading.Thread(target=target, name=name, daemon=True).start()
    return outcome


class Runtime:
    """Settings, lifecycle, signals, stall watchdog and offload pool of one service process.

    ``loop`` is the asyncio server's event loop (``None`` for the thread-pool server): it is
    watched for stalls, and it wakes for signals.
    """

    def __init__(
        self, settings: RuntimeSettings, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.lifecycle = Lifecycle()
        self.watchdog = StallWatchdog(
            settings.stall_threshold,
            lag_interval=settings.lag_interval,
            use_faulthandler=settings.stall_faulthandler,
            dump_path=settings.stall_dump_file,
        )
        self.offloader = Offloader.from_settings(settings)
        self.signals = Signals()
        self.shutdown_reason: str | None = None
        self._draining_since: float | None = None
        self.lifecycle.add_listener(lambda state: SERVICE_READY.set(state is State.SERVING))

    def start(self) -> None:
        """Warm up: tracing, the stall watchdog (and loop heartbeat), then the offload pool.

        Blocks until every worker answered; :class:`StartupError` if the pool cannot start.
        """
        faulthandler.enable()  # a crash in C code still leaves a Python stack on stderr
        try:
            exporting = tracing.configure()
        except tracing.TracingConfigError as error:
            raise StartupError(str(error)) from None
        log.info("tracing_configured", exporting=exporting)
        self.watchdog.start()
        if self.loop is not None:
            self.watchdog.watch_loop(self.loop)
        try:
            self.offloader.start()
        except Exception as error:
            raise StartupError("the offload pool did not start") from error
        install_offloader(self.offloader)

    def startup_failed(self, error: Exception) -> int:
        """Log why the start failed and begin the shutdown; the exit status (1)."""
        if isinstance(error, StartupError):
            log.error("startup_failed", reason=str(error), exc_info=error.__cause__)
        else:
            log.error("startup_failed", reason="the resources did not open", exc_info=error)
        self.request_shutdown("startup failed")
        return 1

    def ready(self) -> bool:
        """SERVING (ready for traffic), unless shutdown was requested first.

        What start-up built (modules, the app, the resources) lives as long as the process:
        it is frozen out of the garbage collector's way, which otherwise goes through all of
        it in every full collection: one every few thousand requests under load, each a pause
        of tens of milliseconds on the event loop. From then on the young generation is
        collected every :data:`YOUNG_COLLECTION_EVERY` allocations instead of 700.
        """
        if self.signals.received.is_set() or not self.lifecycle.transition(State.SERVING):
            return False
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
        log.info("service_ready", pid=os.getpid())
        return True

    def wait_for_shutdown(self) -> None:
        """Block until a signal arrives, then start draining."""
        self.signals.wait(self.signals.received)
        self.request_shutdown(f"signal {self.signals.name}")

    def request_shutdown(self, reason: str) -> None:
        """DRAINING: not ready from now on."""
        self.shutdown_reason = self.shutdown_reason or reason
        if self.lifecycle.transition(State.DRAINING):
            self._draining_since = time.monotonic()
            log.info(
                "shutdown_requested",
                reason=self.shutdown_reason,
                drain_delay=self.settings.drain_delay,
                shutdown_grace=self.settings.shutdown_grace,
            )

    def sleep(self, seconds: float) -> None:
        """Sleep, still answering signals at once (the thread-pool server's drain delay)."""
        self.signals.wait(None, seconds)

    def grace_left(self) -> float:
        """What is left of drain delay plus grace since draining began (at least 0.1 s)."""
        if self._draining_since is None:
            return self.settings.shutdown_grace
        budget = self.settings.drain_delay + self.settings.shutdown_grace
        return max(0.1, self._draining_since + budget - time.monotonic())

    def stop(self) -> None:
        """Stop the offload pool (queued calls fail, running ones get what is left of the
        grace), the watchdog, and become STOPPED; last, flush the spans not yet exported.
        Call once the server accepts no requests.
        """
        self.request_shutdown("stopping")
        self.offloader.shutdown(self.grace_left())
        install_offloader(None)
        self.watchdog.stop()
        self.lifecycle.transition(State.STOPPED)
        log.info("service_stopped", reason=self.shutdown_reason)
        tracing.shutdown()
