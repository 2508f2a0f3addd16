"""The health service of the thread-pool server (``health.py`` says what it answers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health

from .health import LIVENESS, NOT_SERVING, SERVING, add_health_service


class SyncHealth:
    """For the thread-pool server.

    Checks run on two threads of their own, so a server whose handler threads are all busy
    with long RPCs still answers its probes. Watch streams are non-blocking: they hold no
    thread at all while they wait for a change.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = (health.OVERALL_HEALTH, *services)
        self._servicer = health.HealthServicer(experimental_non_blocking=True)
        self._checks = ThreadPoolExecutor(2, thread_name_prefix="grpc-health")
        self._streams: set[_Stream] = set()  # the open Watch streams
        self._set_all(NOT_SERVING)
        self._servicer.set(LIVENESS, SERVING)

    def add_to(self, server: grpc.Server) -> None:
        # grpcio passes Watch a callback instead of taking a thread; starting a stream takes
        # a thread for a moment: one of health's own, never a handler's.
        watch = OnOwnThreads(self._watch, self._checks, non_blocking=True)
        add_health_service(server, OnOwnThreads(self._servicer.Check, self._checks), watch)

    def serving(self) -> None:
        self._set_all(SERVING)

    def shutting_down(self) -> None:
        """NOT_SERVING for every name, now and for the rest of the process's life."""
        self._servicer.enter_graceful_shutdown()

    def end_watches(self) -> None:
        """End every open Watch stream (status OK), before the server stops."""
        for stream in list(self._streams):
            stream.send(None)

    def _watch(self, request: Any, context: grpc.ServicerContext, send: Any) -> Any:
        """grpcio's non-blocking Watch, keeping hold of each stream so that it can be ended."""
        stream = _Stream(send)
        self._streams.add(stream)
        context.add_callback(lambda: self._streams.discard(stream))
        return self._servicer.Watch(request, context, stream.send)

    def _set_all(self, status: int) -> None:
        for name in self.names:
            self._servicer.set(name, status)


class _Stream:
    """One Watch stream's send callback, made safe to end twice (grpcio's is not)."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._ended = False

    def send(self, response: Any) -> None:
        """Send ``response``; ``None`` ends the stream. Nothing is sent after the end."""
        with self._lock:
            if self._ended:
                return
            self._ended = response is None
            self._send(response)


class OnOwnThreads:
    """A handler grpcio runs on ``experimental_thread_pool`` instead of its handler threads."""

    def __init__(
        self, behavior: Callable[..., Any], pool: ThreadPoolExecutor, *, non_blocking: bool = False
    ) -> None:
        self._behavior = behavior
        self.experimental_thread_pool = pool
        self.experimental_non_blocking = non_blocking

    def __call__(self, *args: Any) -> Any:
        return self._behavior(*args)
