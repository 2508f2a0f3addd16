"""Run blocking or CPU-bound work away from the request path: ``await offload(fn, *args)``.

One bounded pool per service, of threads or of worker processes. Its parts, one job each:

* :mod:`.errors`: what a caller gets instead of a result;
* :mod:`.job`: one accepted call; :mod:`.admission`: the bounded queue and the slots in use;
* :mod:`.pool`: deadlines, cancellation and shutdown around an executor;
* :mod:`.threads` and :mod:`.processes` (with :mod:`.worker_process`, the child's side);
* :mod:`.cancellation`: cancelling the calls of a blocking (sync) caller;
* :mod:`.sizing`: how many CPUs the process may use (affinity mask and cgroup quota);
* :mod:`.public`: the process-wide pool behind :func:`offload` and :func:`offload_sync`.
"""

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
