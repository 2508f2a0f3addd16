"""Signals are handled even while the event loop (grpc.aio) or a handler thread is blocked in
Python code: a second SIGTERM/SIGINT exits at once, SIGUSR1 dumps every thread's stack.
"""

from __future__ import annotations

import signal

import grpc
import pytest

from grpc_support import BLOCK_METHOD, THREADED, GrpcService, start_failing_grpc


def block_a_handler(service: GrpcService, channel: grpc.Channel) -> grpc.Future[bytes]:
    """Call the method that runs Python code for minutes; return once it runs."""
    block: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(BLOCK_METHOD)
    call: grpc.Future[bytes] = block.future(b"", timeout=300)
    service.wait_event("busy_loop_started", 60)
    return call


def test_a_second_signal_exits_at_once_while_a_handler_is_blocked() -> None:
    service = start_failing_grpc(drain_delay=0, offload_executor="thread")
    try:
        with service.channel() as channel:
            block_a_handler(service, channel)
            service.process.signal(signal.SIGTERM)
            service.wait_event("shutdown_requested", 30)
            service.process.signal(signal.SIGINT)
            # Far less than the two minutes the handler stays blocked.
            assert service.process.wait_exit(30) == 128 + signal.SIGINT
        assert service.events("shutdown_forced")
    finally:
        service.process.stop()


@pytest.mark.skipif(not THREADED, reason="grpc.aio's handlers are tasks: stop(grace) cancels them")
def test_a_handler_that_outlives_the_grace_ends_the_process_with_status_1() -> None:
    """A thread cannot be stopped: past the grace the thread-pool server exits 1 and says why,
    rather than wait for the handler (here, two minutes) and outlast the orchestrator."""
    service = start_failing_grpc(drain_delay=0, shutdown_grace=1, offload_executor="thread")
    try:
        with service.channel() as channel:
            block_a_handler(service, channel)
            service.process.signal(signal.SIGTERM)
            assert service.process.wait_exit(60) == 1
        [incomplete] = service.events("shutdown_incomplete")
        assert incomplete["reason"] == "RPC handlers still running after the grace"
    finally:
        service.process.stop()


def test_sigusr1_dumps_every_threads_stack_while_a_handler_is_blocked() -> None:
    service = start_failing_grpc(offload_executor="thread")
    try:
        with service.channel() as channel:
            block_a_handler(service, channel)
            service.process.signal(signal.SIGUSR1)
            pattern = r'File ".*grpc_support\.py", line \d+ in block'
            service.process.stderr.wait_for(pattern, 30)
            assert service.process.process.poll() is None, "SIGUSR1 must not end the service"
    finally:
        service.process.stop()
