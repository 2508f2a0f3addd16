"""A hang that never ends fails the liveness probe, so the orchestrator restarts the process."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from gil_hang import PROBE_TIMEOUT, HangingService, wait_for_dump

from conftest import free_port, service_env
from http_support import HttpService, wait_ready


def test_livez_fails_while_c_code_holds_the_gil_for_good(tmp_path: Path) -> None:
    trigger = tmp_path / "hang"
    port = free_port()
    dumps = tmp_path / "stalls.txt"  # STALL_DUMP_FILE: where faulthandler writes the stacks
    process = HangingService(
        service_env(host="127.0.0.1", port=port, stall_dump_file=dumps), trigger
    )
    try:
        service = HttpService(process, port)
        wait_ready(service)
        livez = f"{service.base_url}/livez"
        assert httpx2.get(livez, timeout=PROBE_TIMEOUT).status_code == 200
        assert service.wait_event("stall_watchdog_started")["faulthandler_file"] == str(dumps)

        trigger.touch()
        wait_for_dump(dumps, "hang_when_triggered")
        with pytest.raises(httpx2.TimeoutException):
            httpx2.get(livez, timeout=PROBE_TIMEOUT)
        assert process.process.poll() is None  # hung, not crashed: only the probe can tell
    finally:
        process.stop()
