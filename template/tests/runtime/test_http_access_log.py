"""The access log's sampling: errors and slow requests always, fast successes up to
``ACCESS_LOG_PER_SECOND`` a second and one in ``ACCESS_LOG_SAMPLE`` beyond, and a count of the
lines left out."""

from __future__ import annotations

from collections.abc import Callable

from conftest import ServiceProcess, wait_until
from http_support import start_http


def test_a_sampled_access_log_keeps_every_error_and_counts_what_it_leaves_out(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(
        start_service, offload_executor="thread", access_log_per_second=0, access_log_sample=3
    )
    with service.client() as client:
        ids = [f"ping-{index}" for index in range(7)]
        for request_id in ids:
            assert client.get("/v1/ping", headers={"x-request-id": request_id}).is_success
        for index in range(2):
            missing = client.get("/v1/nowhere", headers={"x-request-id": f"missing-{index}"})
            assert missing.status_code == 404
    wait_until(
        lambda: {"missing-0", "missing-1"} <= _logged(service.process),
        what="the access log lines of both 404s",
    )
    # The first fast success is logged, then one in three.
    assert _logged(service.process) == {"ping-0", "ping-3", "ping-6", "missing-0", "missing-1"}
    assert service.metric("http_server_access_log_skipped_total") == 4
    assert service.metric("http_server_request_duration_seconds_count", http_route="/v1/ping") == 7


def _logged(process: ServiceProcess) -> set[str]:
    return {line["request_id"] for line in process.events("request")}


def test_a_busy_service_logs_its_fast_successes_up_to_the_rate_then_a_sample(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_http(
        start_service, offload_executor="thread", access_log_per_second=3, access_log_sample=1000
    )
    ids = [f"busy-{index}" for index in range(60)]
    with service.client() as client:
        for request_id in ids:
            assert client.get("/v1/ping", headers={"x-request-id": request_id}).is_success
        assert client.get("/v1/nowhere", headers={"x-request-id": "last"}).status_code == 404
    wait_until(lambda: "last" in _logged(service.process), what="the 404's access log line")
    logged = _logged(service.process) - {"last"}
    # Each second starts with 3 lines, so the first 3 requests are always logged; 60 requests
    # would have to be spread over 15 seconds or more for all of them to be.
    assert {"busy-0", "busy-1", "busy-2"} <= logged < set(ids)
    skipped = service.metric("http_server_access_log_skipped_total")
    assert skipped == len(ids) - len(logged)
