"""The service runtime: stall detection, offloading, request context, logs, metrics, lifecycle.

Business code needs only what is exported here; the transports use the submodules.
"""

from .context import current_request_id
from .logging import get_logger
from .offload import (
    OffloadCancelled,
    OffloadError,
    OffloadRejected,
    OffloadTimeout,
    WorkAborted,
    WorkerCrashed,
    offload,
    offload_sync,
)

__all__ = [
    "OffloadCancelled",
    "OffloadError",
    "OffloadRejected",
    "OffloadTimeout",
    "WorkAborted",
    "WorkerCrashed",
    "current_request_id",
    "get_logger",
    "offload",
    "offload_sync",
]
