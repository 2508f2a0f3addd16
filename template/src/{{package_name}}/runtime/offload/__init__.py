"""Run blocking or CPU-bound work in the service's one bounded pool of threads or processes."""

from .cancellation import CancelScope, cancel_scope
from .errors import (
    OffloadCancelled,
    OffloadError,
    OffloadRejected,
    OffloadTimeout,
    RemoteTraceback,
    WorkAborted,
    WorkerCrashed,
)
from .pool import Executor, Offloader
from .public import current_offloader, install_offloader, offload, offload_sync

__all__ = [
    "CancelScope",
    "Executor",
    "OffloadCancelled",
    "OffloadError",
    "OffloadRejected",
    "OffloadTimeout",
    "Offloader",
    "RemoteTraceback",
    "WorkAborted",
    "WorkerCrashed",
    "cancel_scope",
    "current_offloader",
    "install_offloader",
    "offload",
    "offload_sync",
]
