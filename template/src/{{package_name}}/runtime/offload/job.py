"""One offloaded call on its way through the pool: what to run, for whom, and until when."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from .errors import OffloadError


def label_of(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of ``fn``, for log lines and error messages."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


@dataclass(eq=False)
class Job:
    """A call accepted by the pool. Its future is the caller's; its slot, the pool's, is held
    until its worker is free again, which for an abandoned thread is later (:mod:`.admission`).
    """

    fn: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    label: str
    deadline: float | None  # the request's deadline (time.monotonic()), if it has one
    queue_deadline: float | None  # dropped with OffloadTimeout if still queued then
    run_limit: float | None  # seconds it may run once started
    context: contextvars.Context | None = None  # thread executor: run in this copy
    values: dict[str, str | None] = field(default_factory=dict)  # request id, trace context
    submitted: float = field(default_factory=time.monotonic)
    submitted_ns: int = field(default_factory=time.time_ns)  # wall clock, for its span
    started: float | None = None
    run_deadline: float | None = None
    stop_reason: str | None = None  # "timeout" or "cancelled" once the pool gave up on it
    future: Future[Any] = field(default_factory=Future)

    def start(self, now: float) -> None:
        self.started = now
        limits = [t for t in (self.deadline, self.run_limit and now + self.run_limit) if t]
        self.run_deadline = min(limits) if limits else None

    def ran_for(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def release(self) -> None:
        """Drop the function and its arguments: a dropped call must not keep them alive."""
        self.fn = None
        self.args = ()
        self.kwargs = {}
        self.context = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Complete the caller's future unless it is already complete."""
        with contextlib.suppress(InvalidStateError):
            if error is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(error)

    def drop(self, error: OffloadError) -> None:
        """Fail a call that will not run (again): release it and answer its caller."""
        self.release()
        self.settle(error=error)

    def request_values(self) -> dict[str, str]:
        """The request id and traceparent, where set, for log lines (baggage is the caller's)."""
        logged = ("request_id", "traceparent")
        return {key: value for key in logged if (value := self.values.get(key)) is not None}
