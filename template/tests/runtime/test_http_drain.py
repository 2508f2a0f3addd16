"""SIGTERM under load: not ready at once, keep serving through the drain delay, finish every
request already accepted, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx2
import pytest

from conftest import ServiceProcess
from http_support import LARGE_BODY, HttpService, document_costing, start_http

DRAIN_DELAY = 10.0  # generous: the client must see /readyz turn 503 before listening stops
GRACE = 60
PINGERS = 10  # clients sending light requests, each every few milliseconds
VALIDATIONS = 300  # validations in flight when SIGTERM arrives, queued for one worker
VALIDATION_COST = 0.01  # seconds of CPU each
LAST_COST = 2 * DRAIN_DELAY  # the last validation is still running when the drain delay ends


@dataclass
class Call:
    kind: str
    sent_at: float = field(default_factory=time.time)  # wall clock, like the service's log
    status: int | None = None
    error: str | None = None


@dataclass
class Observed:
    calls: list[Call] = field(default_factory=list)
    readiness: list[int] = field(default_factory=list)  # /readyz statuses, in order


def test_sigterm_under_load_drops_no_request(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_http(
        start_service,
        drain_delay=DRAIN_DELAY,
        shutdown_grace=GRACE,
        offload_workers=1,
        offload_queue=VALIDATIONS + 1,
        # Every accepted call may take the whole grace period, however slow the machine: the
        # pool's own time limits are not what this test is about.
        offload_timeout=GRACE,
        offload_queue_timeout=GRACE,
        request_budget=2 * GRACE,
        stall_threshold=1.0,
        max_body_size=LARGE_BODY,
        log_level="debug",  # probes are logged at debug level
    )
    documents = document_costing(VALIDATION_COST), document_costing(LAST_COST)
    observed = asyncio.run(_load_through_sigterm(service, *documents))

    # Readiness turned 503 first, while everything else was still being served: in the
    # service's own access log, pings answered 200 after /readyz answered 503.
    assert observed.readiness[0] == 200
    assert observed.readiness[-1] == 503
    answers = [(e["path"], e["status"]) for e in service.events("request")]
    not_ready = answers.index(("/readyz", 503))
    assert ("/v1/ping", 200) in answers[not_ready:]

    # Every request (all were sent well before the drain delay ended) completed with 2xx.
    # A connection refused after the drain delay was never accepted: that is the drain working.
    over = datetime.fromisoformat(service.wait_event("drain_delay_over")["timestamp"]).timestamp()
    failures = [
        c
        for c in observed.calls
        if (c.status is None or not 200 <= c.status < 300)
        and not (c.sent_at > over and "ConnectError" in (c.error or ""))
    ]
    assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
    assert sum(c.kind == "validate" for c in observed.calls) == VALIDATIONS + 1

    assert service.process.wait_exit(GRACE) == 0
    # The drain happened in order, and requests were still in flight when listening stopped.
    drain = ("shutdown_requested", "drain_delay_over", "offload_stopped", "service_stopped")
    order = [_line_of(service, event) for event in drain]
    assert order == sorted(order)
    assert service.events("drain_delay_over")[0]["in_flight"] > 0


def test_new_connections_are_refused_once_the_drain_delay_is_over(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(start_service, drain_delay=0.5, shutdown_grace=GRACE)
    with service.client() as client:
        client.get("/v1/ping")
        service.process.signal(signal.SIGTERM)
        service.wait_event("drain_delay_over")
        assert service.process.wait_exit(GRACE) == 0
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(service.base_url + "/v1/ping")


def test_a_second_signal_exits_at_once(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_http(start_service, drain_delay=120, shutdown_grace=120)
    service.process.signal(signal.SIGINT)
    service.wait_event("shutdown_requested")
    service.process.signal(signal.SIGTERM)
    # Far less than the 120 s drain delay: only the second signal can explain the exit.
    assert service.process.wait_exit(10) == 128 + signal.SIGTERM
    assert service.events("shutdown_forced")


async def _load_through_sigterm(
    service: HttpService, document: dict[str, Any], last: dict[str, Any]
) -> Observed:
    observed = Observed()
    not_ready = asyncio.Event()  # /readyz answered 503
    served_while_not_ready = asyncio.Event()  # and pings sent after that were answered
    answered_while_not_ready = 0
    stop_pinging = asyncio.Event()
    limits = httpx2.Limits(max_connections=PINGERS + VALIDATIONS + 10)
    async with httpx2.AsyncClient(base_url=service.base_url, timeout=120, limits=limits) as client:

        async def call(kind: str, method: str, path: str, **kwargs: Any) -> None:
            record = Call(kind)
            observed.calls.append(record)
            try:
                record.status = (await client.request(method, path, **kwargs)).status_code
            except httpx2.HTTPError as error:
                record.error = repr(error)

        async def ping_until_stopped() -> None:
            nonlocal answered_while_not_ready
            while not stop_pinging.is_set():
                sent_while_not_ready = not_ready.is_set()
                await call("ping", "GET", "/v1/ping")
                if sent_while_not_ready:
                    answered_while_not_ready += 1
                    if answered_while_not_ready >= PINGERS:
                        served_while_not_ready.set()
                await asyncio.sleep(0.02)

        async def validations_accepted(count: int) -> None:
            while True:
                metrics = (await client.get("/metrics")).text
                held = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith(("offload_in_flight{", "offload_queued{"))
                )
                done = sum(c.kind == "validate" and c.status is not None for c in observed.calls)
                if held + done >= count:
                    return
                await asyncio.sleep(0.05)

        async def watch_readiness() -> None:
            while True:
                status = (await client.get("/readyz")).status_code
                observed.readiness.append(status)
                if status == 503:
                    not_ready.set()
                    return
                await asyncio.sleep(0.01)

        pingers = [asyncio.create_task(ping_until_stopped()) for _ in range(PINGERS)]
        validations = [
            asyncio.create_task(call("validate", "POST", "/v1/documents:validate", json=document))
            for _ in range(VALIDATIONS)
        ]
        await validations_accepted(VALIDATIONS)  # each is queued or running in the service
        validations.append(
            asyncio.create_task(call("validate", "POST", "/v1/documents:validate", json=last))
        )
        await validations_accepted(VALIDATIONS + 1)
        observed.readiness.append((await client.get("/readyz")).status_code)
        service.process.signal(signal.SIGTERM)
        await watch_readiness()
        # Light traffic goes on while not ready, then stops well before the drain delay ends:
        # every request is sent while the service still accepts connections.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(served_while_not_ready.wait(), DRAIN_DELAY / 2)
        stop_pinging.set()
        await asyncio.gather(*pingers, *validations)
    return observed


def _line_of(service: HttpService, event: str) -> int:
    for index, line in enumerate(service.process.stdout.lines):
        if f'"event":"{event}"' in line:
            return index
    raise AssertionError(f"no {event} event in the service's output")
