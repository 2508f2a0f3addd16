"""Signals are handled even while the event loop is blocked in Python code."""

from __future__ import annotations

import contextlib
import signal
import threading

import httpx2

from http_support import HttpService, running_http


def block_the_loop(service: HttpService) -> None:
    """Send a request whose handler holds the loop; return once it runs."""

    def call() -> None:
        with contextlib.suppress(httpx2.HTTPError):  # the service exits meanwhile
            httpx2.get(service.base_url + "/v1/test/block", timeout=300)

    threading.Thread(target=call, daemon=True).start()
    service.wait_event("busy_loop_started", 60)


def test_a_second_signal_exits_at_once_while_the_loop_is_blocked() -> None:
    with running_http(test_routes=True, drain_delay=0, offload_executor="thread") as service:
        block_the_loop(service)
        service.process.signal(signal.SIGTERM)
        service.wait_event("shutdown_requested", 30)  # noticed, though the loop is blocked
        service.process.signal(signal.SIGINT)
        # Far less than the two minutes the loop stays blocked.
        assert service.process.wait_exit(30) == 128 + signal.SIGINT
        assert service.events("shutdown_forced")


def test_sigusr1_dumps_every_threads_stack_while_the_loop_is_blocked() -> None:
    with running_http(test_routes=True, offload_executor="thread") as service:
        block_the_loop(service)
        service.process.signal(signal.SIGUSR1)
        service.process.stderr.wait_for(r'File ".*http_support\.py", line \d+ in block', 30)
        service.process.stderr.wait_for(r"Thread 0x[0-9a-f]+", 5)
        assert service.process.process.poll() is None, "SIGUSR1 must not end the service"
