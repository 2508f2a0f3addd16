"""Stall detection names the blocking code while the block is still going on.

Each scenario blocks the event loop (or a watched sync handler) until the test releases it,
so a report observed before the release was necessarily made during the block.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime_support import Scenario, dump_section

FUNCTIONS = {
    "cpu": "block_on_cpu",
    "sleep": "block_in_sleep",
    "socket": "block_on_socket",
    "regex": "block_in_regex",
    "endless-cpu": "block_on_cpu",
    "endless-regex": "block_in_regex",
}


@pytest.fixture
def scenario() -> Iterator[Callable[..., Scenario]]:
    started: list[Scenario] = []

    def start(*args: str, **settings: object) -> Scenario:
        started.append(Scenario(*args, **settings))
        return started[-1]

    yield start
    for process in started:
        process.stop()


class Blocker:
    """What a scenario blocks on, and how the test lets it go."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.release_file = directory / "release"
        self.listener: socket.socket | None = None
        if kind == "socket":
            self.listener = socket.create_server(("127.0.0.1", 0))
            self.listener.settimeout(15)

    @property
    def argument(self) -> str:
        if self.listener is not None:
            return str(self.listener.getsockname()[1])
        return str(self.release_file)

    def release(self) -> None:
        if self.listener is None:
            self.release_file.touch()
            return
        connection, _ = self.listener.accept()
        with connection:
            connection.sendall(b"x")
        self.listener.close()


@pytest.mark.parametrize("kind", ["cpu", "sleep", "socket"])
def test_loop_stall_is_reported_with_the_culprit_while_it_lasts(
    kind: str, scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    blocker = Blocker(kind, tmp_path)
    process = scenario("loop", kind, blocker.argument)
    loop_thread = process.wait_event("stall_watch_loop")["loop_thread"]

    report = process.wait_event("stall_detected")
    assert process.events("block_finished") == []  # still blocked: the test has not released it
    assert report["kind"] == "event_loop"
    assert report["thread"] == loop_thread
    assert report["culprit"].endswith(f"in {FUNCTIONS[kind]}")
    assert any("in loop_scenario" in frame for frame in report["stack"])

    blocker.release()
    ended = process.wait_event("event_loop_stalled")
    assert ended["duration"] >= report["stalled_for"]
    assert ended["stack"] == report["stack"]
    assert ended["stack_captured"] is True
    assert process.wait_exit() == 0


def test_gil_holding_loop_stall_is_dumped_while_it_lasts(
    scenario: Callable[..., Scenario],
) -> None:
    process = scenario("loop", "regex")
    loop_thread = process.wait_event("stall_watch_loop")["loop_thread"]

    process.stderr.wait_for(r"in block_in_regex$", timeout=30)
    dump = list(process.stderr.lines)
    assert "block_finished" not in dump  # the regex was still running when it was dumped
    assert any(line.startswith("Timeout (") for line in dump)
    assert any("in block_in_regex" in frame for frame in dump_section(dump, loop_thread))

    process.stderr.wait_for("block_finished", timeout=60)
    ended = process.wait_event("event_loop_stalled")
    assert ended["faulthandler_dump"] == "stderr"
    assert process.events("stall_watchdog_starved")
    assert process.wait_exit() == 0


@pytest.mark.parametrize("kind", ["endless-cpu", "endless-regex"])
def test_a_block_that_never_ends_is_still_reported(
    kind: str, scenario: Callable[..., Scenario]
) -> None:
    process = scenario("loop", kind)
    loop_thread = process.wait_event("stall_watch_loop")["loop_thread"]
    if kind == "endless-cpu":
        report = process.wait_event("stall_detected")
        assert report["culprit"].endswith("in block_on_cpu")
    else:
        process.stderr.wait_for(r"in block_in_regex$", timeout=30)
        section = dump_section(process.stderr.lines, loop_thread)
        assert any("in block_in_regex" in frame for frame in section)
    assert process.process.poll() is None  # reported, and still stuck


@pytest.mark.parametrize("kind", ["cpu", "sleep"])
def test_stuck_sync_handler_is_reported_with_method_and_request_id(
    kind: str, scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    blocker = Blocker(kind, tmp_path)
    process = scenario("handler", kind, blocker.argument)
    handler_thread = process.wait_event("block_started")["thread"]

    report = process.wait_event("stall_detected")
    assert process.events("block_finished") == []
    assert report["kind"] == "handler"
    assert report["name"] == "/demo.v1.Demo/Validate"
    assert report["request_id"] == "req-handler-42"
    assert report["thread"] == handler_thread
    assert report["culprit"].endswith(f"in {FUNCTIONS[kind]}")

    blocker.release()
    ended = process.wait_event("handler_stalled")
    assert ended["name"] == "/demo.v1.Demo/Validate"
    assert ended["request_id"] == "req-handler-42"
    assert ended["duration"] >= report["stalled_for"]
    assert ended["stack"] == report["stack"]
    assert process.wait_exit() == 0


def test_sync_handler_waiting_for_offloaded_work_is_not_a_stall(
    scenario: Callable[..., Scenario],
) -> None:
    # The handler waits ten thresholds for offload_sync; sleeping as long itself is reported
    # (test_stuck_sync_handler_is_reported_with_method_and_request_id[sleep]).
    process = scenario("handler", "offload-wait")
    process.wait_event("block_finished")
    assert process.wait_exit() == 0
    assert process.events("stall_detected") == []
    assert process.events("handler_stalled") == []


def test_gil_holding_sync_handler_is_dumped_while_it_lasts(
    scenario: Callable[..., Scenario],
) -> None:
    process = scenario("handler", "regex")
    handler_thread = process.wait_event("block_started")["thread"]

    process.stderr.wait_for(r"in block_in_regex$", timeout=30)
    dump = list(process.stderr.lines)
    assert "block_finished" not in dump
    assert any("in block_in_regex" in frame for frame in dump_section(dump, handler_thread))

    ended = process.wait_event("handler_stalled", timeout=60)
    assert ended["request_id"] == "req-handler-42"
    assert ended["thread"] == handler_thread
    assert ended["faulthandler_dump"] == "stderr"
    assert process.wait_exit() == 0
