"""Cancelling blocking callers' calls: the synchronous counterpart of task cancellation.

An ``await offload(...)`` is stopped by cancelling its task. A thread blocked in
``offload_sync`` cannot be cancelled, so the transport opens a scope per request and cancels
it when the client goes away (gRPC: ``context.add_callback(scope.cancel)``)::

    with cancel_scope() as scope:
        context.add_callback(scope.cancel)
        return handler(request, context)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job
    from .pool import Offloader

_scope: ContextVar[CancelScope | None] = ContextVar("offload_cancel_scope", default=None)


class CancelScope:
    """The offloaded calls a request is waiting for; :meth:`cancel` stops them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Job, Offloader] = {}
        self.cancelled = False

    def track(self, pool: Offloader, job: Job) -> None:
        with self._lock:
            cancelled = self.cancelled
            if not cancelled:
                self._jobs[job] = pool
        if cancelled:
            pool.abandon(job)

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


@contextmanager
def cancel_scope() -> Iterator[CancelScope]:
    """A scope for the calls made in the block (see the module docstring)."""
    scope = CancelScope()
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def current_scope() -> CancelScope | None:
    return _scope.get()
