"""An RPC cancelled by its client stops what its handler was waiting for.

``/test.Failing/Sleep`` offloads an hour's sleep. Calls their clients cancel must not leave
it holding the pool's only worker: a process worker is killed and replaced, a queued call is
dropped, and the next caller is served. A thread cannot be stopped; it is counted as
abandoned and keeps its slot until it ends.
"""

from __future__ import annotations

import grpc
import pytest

from conftest import wait_until
from grpc_support import (
    SLEEP_METHOD,
    GrpcService,
    documents_pb2,
    documents_pb2_grpc,
    start_failing_grpc,
)

LIGHT = documents_pb2.ValidateRequest(document_json='{"name": "Ada"}')


def give_up(service: GrpcService, channel: grpc.Channel, executor: str, calls: int) -> None:
    """Make ``calls`` Sleep calls, wait until the pool has them all, then cancel them."""

    def taken() -> float:
        return service.metric("offload_in_flight", executor=executor) + service.metric(
            "offload_queued", executor=executor
        )

    sleep: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SLEEP_METHOD)
    futures = [sleep.future(b"") for _ in range(calls)]
    wait_until(lambda: taken() == calls, 30, "the sleeps to reach the pool")
    for future in futures:
        future.cancel()


def test_a_cancelled_call_stops_its_process_and_a_queued_one_is_dropped() -> None:
    service = start_failing_grpc(
        offload_executor="process", offload_workers=1, offload_timeout=3600
    )
    try:
        with service.channel() as channel:
            give_up(service, channel, "process", 2)  # one runs (its worker is killed), one queued
            wait_until(
                lambda: (
                    service.metric("offload_killed_total", executor="process", reason="cancelled")
                    == 1
                ),
                30,
                "the running call's worker to be killed",
            )
            assert (
                service.metric("offload_cancelled_total", executor="process", stage="queued") == 1
            )
            stub = documents_pb2_grpc.DocumentServiceStub(channel)

            def served() -> bool:  # once the new worker is up
                try:
                    return stub.Validate(LIGHT, timeout=30).valid
                except grpc.RpcError:
                    return False

            wait_until(served, 90, "a light call to be served")
    finally:
        service.process.stop()


def test_a_cancelled_calls_thread_is_counted_as_abandoned() -> None:
    service = start_failing_grpc(
        offload_executor="thread", offload_workers=1, offload_queue=0, offload_timeout=3600
    )
    try:
        with service.channel() as channel:
            give_up(service, channel, "thread", 1)
            wait_until(
                lambda: service.metric("offload_abandoned_threads", executor="thread") == 1,
                30,
                "the thread to be counted as abandoned",
            )
            # It still sleeps in the only worker thread: admission does not pretend otherwise.
            stub = documents_pb2_grpc.DocumentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Validate(LIGHT, timeout=30)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        service.process.stop()
