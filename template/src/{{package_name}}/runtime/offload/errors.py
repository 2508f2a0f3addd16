"""What the pool raises to a caller instead of the offloaded function's own result."""

from __future__ import annotations


class OffloadError(Exception):
    """Base class of the errors raised by the offloader itself (not by the offloaded call)."""


class OffloadRejected(OffloadError):  # noqa: N818 - named for what happened to the call
    """Workers and queue are full (or the service is shutting down): retry later."""

    retry_after = 1  # seconds, for the caller's client


class OffloadTimeout(OffloadError):  # noqa: N818
    """The call did not finish in time: its queue wait, run limit or request deadline ran out."""


class OffloadCancelled(OffloadError):  # noqa: N818
    """The caller went away (client disconnect, cancelled RPC); the call was dropped or stopped."""


class WorkerCrashed(OffloadError):  # noqa: N818
    """The worker process running the call died; the pool has replaced it."""


class WorkAborted(OffloadError):  # noqa: N818
    """The function raised SystemExit, KeyboardInterrupt or GeneratorExit, which would stop the
    whole server if raised in a request handler; only this call fails.
    """


class RemoteTraceback(Exception):  # noqa: N818 - only carries text, as in concurrent.futures
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""


def contained(error: BaseException, label: str) -> BaseException:
    """``error`` as the caller should see it: anything that is not an ``Exception`` is wrapped."""
    if isinstance(error, Exception):
        return error
    wrapped = WorkAborted(
        f"{label} raised {type(error).__name__}({', '.join(map(repr, error.args))}), which would "
        "stop the whole service; only this call failed"
    )
    wrapped.__cause__ = error
    return wrapped
