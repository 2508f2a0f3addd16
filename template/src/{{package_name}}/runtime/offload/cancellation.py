"""Cancelling blocking callers' calls: the synchronous counterpart of task cancellation.

A thread blocked in ``offload_sync`` cannot be cancelled: the transport runs each request in a
``cancel_scope(context.add_callback)``, cancelled when the client goes away. The callback is
registered at the request's first offloaded call only: most requests offload nothing, and
registering takes a lock that grpcio's own thread also takes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job
    from .pool import Offloader

# Registers a callback to run when the request ends; False if it has ended already.
OnEnd = Callable[[Callable[[], None]], bool]

_scope: ContextVar[CancelScope | None] = ContextVar("offload_cancel_scope", default=None)
current_scope = _scope.get


class CancelScope:
    """The calls offloaded in its ``with`` block, on this thread; :meth:`cancel` stops them all."""

    def __init__(self, on_end: OnEnd | None = None) -> None:
        self._on_end = on_end
        self._lock = threading.Lock()
        self._jobs: dict[Job, Offloader] = {}
        self.cancelled = False

    def __enter__(self) -> CancelScope:
        self._token: Token[CancelScope | None] = _scope.set(self)
        return self

    def __exit__(self, *_: object) -> None:
        _scope.reset(self._token)

    def track(self, pool: Offloader, job: Job) -> None:
        with self._lock:
            self._jobs[job] = pool
            cancelled = self.cancelled
        on_end, self._on_end = self._on_end, None
        if cancelled or (on_end is not None and not on_end(self.cancel)):
            self.cancel()  # cancelled already, or the request has already ended

    def untrack(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job, None)

    def cancel(self) -> None:
        """Drop or stop every call of the scope; later calls in it are stopped at once."""
        with self._lock:
            self.cancelled = True
            jobs, self._jobs = self._jobs, {}
        for job, pool in jobs.items():
            pool.abandon(job)


cancel_scope = CancelScope  # as the transports and the docs write it: ``with cancel_scope(...):``
