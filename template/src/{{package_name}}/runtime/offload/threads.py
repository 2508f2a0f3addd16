"""The thread executor: worker threads that run each call in a copy of its caller's context.

A thread cannot be killed: a call stopped by the pool runs on, abandoned, until it returns.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .errors import contained
from .spans import run_in_span

if TYPE_CHECKING:
    from .pool import Offloader


def start_worker_threads(pool: Offloader) -> list[threading.Thread]:
    # Daemons: a call stuck past the shutdown grace cannot keep the process from exiting.
    threads = [
        threading.Thread(target=serve, args=(pool,), name=f"offload-thread-{index}", daemon=True)
        for index in range(pool.workers)
    ]
    for thread in threads:
        thread.start()
    return threads


def serve(pool: Offloader) -> None:
    """Run calls until the pool closes."""
    while (job := pool.next_job()) is not None:
        assert job.fn is not None
        assert job.context is not None
        result: object = None
        failure: BaseException | None = None
        try:
            result = job.context.run(
                run_in_span,
                job.fn,
                job.args,
                job.kwargs,
                label=job.label,
                executor="thread",
                submitted_ns=job.submitted_ns,
            )
        except BaseException as error:  # handed to the caller; SystemExit must not end us
            failure = contained(error, job.label)
        job.release()
        pool.complete(job, result, failure)
        del job, result, failure
