"""A hang that never ends fails the liveness probe, so the orchestrator restarts the process."""

from __future__ import annotations

from pathlib import Path

from gil_hang import PROBE_TIMEOUT, HangingService, wait_for_dump

from conftest import free_port, service_env
from grpc_support import GrpcService, health_status, wait_serving


def test_liveness_check_fails_while_c_code_holds_the_gil_for_good(tmp_path: Path) -> None:
    trigger = tmp_path / "hang"
    port, metrics_port = free_port(), free_port()
    env = service_env(host="127.0.0.1", port=port, metrics_port=metrics_port)
    process = HangingService(env, trigger)
    try:
        service = GrpcService(process, port, metrics_port)
        wait_serving(service)
        assert health_status(service.target, "liveness", PROBE_TIMEOUT) == "SERVING"
        dump_file = Path(service.wait_event("stall_watchdog_started")["faulthandler_file"])

        trigger.touch()
        wait_for_dump(dump_file, "hang_when_triggered")
        assert health_status(service.target, "liveness", PROBE_TIMEOUT) == "DEADLINE_EXCEEDED"
        assert process.process.poll() is None  # hung, not crashed: only the probe can tell
    finally:
        process.stop()
