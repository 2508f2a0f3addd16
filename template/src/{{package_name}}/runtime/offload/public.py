"""The process-wide pool business code uses: ``await offload(fn, *args)``."""

from __future__ import annotations

from collections.abc import Callable

from .pool import Offloader, P, T

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

    Raises :class:`OffloadRejected` at once when the pool is full, :class:`OffloadTimeout` when
    the call's queue wait, run limit or request deadline runs out, :class:`WorkerCrashed` if its
    worker process died. Cancelling the awaiting task drops or stops the call.
    """
    return await current_offloader().run(fn, *args, **kwargs)


def offload_sync(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Blocking :func:`offload`, for synchronous handlers."""
    return current_offloader().run_sync(fn, *args, **kwargs)
