"""Stall detection classifies each stall and names the blocking code and request.

Each scenario injects one cause into a real event loop (or a watched sync handler) in a process
of its own, and blocks until the test releases it, so a report observed before the release was
necessarily made during the block. The classes are those of docs/runtime/stall-detection.md.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from otlp_receiver import Receiver, attributes
from runtime_support import Scenario

FUNCTIONS = {
    "cpu": "block_on_cpu",
    "sleep": "block_in_sleep",
    "socket": "block_on_socket",
    "regex": "block_in_regex",
    "gc": "block_in_gc",
    "endless-cpu": "block_on_cpu",
    "endless-regex": "block_in_regex",
}
REQUEST_ID = "req-loop-7"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
THRESHOLD = 0.1  # the scenarios' stall threshold


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


def wait_for_text(path: Path, text: str, timeout: float = 30.0) -> str:
    """The content of ``path`` once it contains ``text``; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.02)
    pytest.fail(f"{path} did not come to contain {text!r} within {timeout} s")


def assert_names_the_request(event: dict[str, object]) -> None:
    assert event["request_id"] == REQUEST_ID
    assert event["trace_id"] == TRACE_ID


@pytest.mark.parametrize(
    ("kind", "cause"), [("cpu", "python"), ("sleep", "syscall"), ("socket", "syscall")]
)
def test_loop_stall_is_classified_and_reported_while_it_lasts(
    kind: str, cause: str, scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    blocker = Blocker(kind, tmp_path)
    process = scenario("loop", kind, blocker.argument)
    loop_thread = process.wait_event("stall_watch_loop")["loop_thread"]

    report = process.wait_event("stall_detected")
    assert process.events("block_finished") == []  # still blocked: the test has not released it
    assert report["kind"] == "event_loop"
    assert report["cause"] == cause
    assert report["thread"] == loop_thread
    assert report["culprit"].endswith(f"in {FUNCTIONS[kind]}")
    assert any("in request" in frame for frame in report["stack"])
    assert_names_the_request(report)

    blocker.release()
    ended = process.wait_event("event_loop_stalled")
    assert ended["cause"] == cause
    assert ended["duration"] >= report["stalled_for"]
    assert ended["stack"] == report["stack"]
    assert_names_the_request(ended)
    assert process.wait_exit() == 0


def stall_and_exit(scenario: Callable[..., Scenario], where: str, tmp_path: Path) -> None:
    """A CPU-bound stall of the ``where`` scenario, reported, then over; the process exits 0
    (and flushes its spans on the way out)."""
    blocker = Blocker("cpu", tmp_path)
    process = scenario(where, "cpu", blocker.argument)
    process.wait_event("stall_detected")
    blocker.release()
    process.wait_event("event_loop_stalled" if where == "loop" else "handler_stalled")
    assert process.wait_exit() == 0


def test_a_stall_is_a_span_in_the_trace_of_the_request_that_blocked(
    scenario: Callable[..., Scenario], exporting_to: Receiver, tmp_path: Path
) -> None:
    stall_and_exit(scenario, "loop", tmp_path)

    _, stall = exporting_to.wait_for("the stall's span", lambda s: s.name == "event_loop_stalled")
    assert stall.trace_id.hex() == TRACE_ID
    assert stall.parent_span_id.hex() == PARENT_SPAN_ID  # the request's span
    assert stall.status.code != Status.STATUS_CODE_ERROR  # late, not failed
    found = attributes(stall.attributes)
    assert found["stall.cause"] == "python"
    assert found["stall.culprit"].endswith("in block_on_cpu")
    assert found["stall.duration_s"] >= THRESHOLD
    assert "in block_on_cpu" in found["code.stacktrace"]


def test_a_stall_outside_any_trace_starts_its_own(
    scenario: Callable[..., Scenario], exporting_to: Receiver, tmp_path: Path
) -> None:
    """The sync handler of this scenario has a request id but no trace context."""
    stall_and_exit(scenario, "handler", tmp_path)

    _, stall = exporting_to.wait_for("the stall's span", lambda s: s.name == "handler_stalled")
    assert stall.parent_span_id == b""  # a root span: a trace of its own
    assert attributes(stall.attributes)["stall.name"] == "/demo.v1.Demo/Validate"


def test_c_code_holding_the_gil_is_dumped_to_the_file_and_reported_structured(
    scenario: Callable[..., Scenario],
) -> None:
    process = scenario("loop", "regex")
    dump_file = Path(process.wait_event("stall_watchdog_started")["faulthandler_file"])
    loop_thread = process.wait_event("stall_watch_loop")["loop_thread"]

    dump = wait_for_text(dump_file, "in block_in_regex")
    assert process.events("block_finished") == []  # dumped while the regex still ran
    assert f"Thread {loop_thread}" in dump

    ended = process.wait_event("event_loop_stalled", timeout=60)
    assert ended["cause"] == "c_code"
    assert ended["stack_source"] == "faulthandler"
    assert ended["culprit"].endswith("in block_in_regex")
    assert any("in request" in frame for frame in ended["stack"])
    assert_names_the_request(ended)
    assert process.wait_exit() == 0
    assert not any(line.startswith(("Timeout (", "Thread 0x")) for line in process.stderr.lines)


def test_a_thread_holding_the_gil_is_named_as_the_culprit(
    scenario: Callable[..., Scenario],
) -> None:
    process = scenario("loop", "gil-hog")
    ended = process.wait_event("event_loop_stalled", timeout=60)
    assert ended["cause"] == "gil_wait"
    assert ended["gil_holder"] == "gil-hog"
    assert ended["culprit"].endswith("in block_in_regex")
    assert any("in block_in_regex" in frame for frame in ended["gil_holder_stack"])
    assert process.wait_exit() == 0


def test_a_garbage_collection_pause_is_reported_as_one(
    scenario: Callable[..., Scenario],
) -> None:
    process = scenario("loop", "gc")
    ended = process.wait_event("event_loop_stalled", timeout=60)
    assert ended["cause"] == "gc"
    assert ended["culprit"].endswith("in block_in_gc")
    assert_names_the_request(ended)
    assert process.wait_exit() == 0


def test_a_paused_process_is_not_reported_as_a_code_stall(
    scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    blocker = Blocker("pause", tmp_path)
    process = scenario("loop", "pause", blocker.argument)
    process.wait_event("stall_watch_loop")
    os.kill(process.process.pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)  # the injected cause: the whole process does not run for a second
    finally:
        os.kill(process.process.pid, signal.SIGCONT)
    paused = process.wait_event("process_paused")
    blocker.release()
    assert process.wait_exit() == 0
    assert paused["cause"] == "paused"
    assert "culprit" not in paused
    assert "stack" not in paused
    assert process.events("stall_detected") == []
    assert process.events("event_loop_stalled") == []


@pytest.mark.parametrize("kind", ["endless-cpu", "endless-regex"])
def test_a_block_that_never_ends_is_still_reported(
    kind: str, scenario: Callable[..., Scenario]
) -> None:
    process = scenario("loop", kind)
    dump_file = Path(process.wait_event("stall_watchdog_started")["faulthandler_file"])
    loop_thread = process.wait_event("stall_watch_loop")["loop_thread"]
    if kind == "endless-cpu":
        report = process.wait_event("stall_detected")
        assert report["culprit"].endswith("in block_on_cpu")
        assert_names_the_request(report)
    else:
        dump = wait_for_text(dump_file, "in block_in_regex")
        assert f"Thread {loop_thread}" in dump
        assert dump.count("Timeout (") == 1  # written once, not once per tick
    assert process.process.poll() is None  # reported, and still stuck


def test_cpu_bound_sync_handler_is_reported_with_method_and_request_id(
    scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    blocker = Blocker("cpu", tmp_path)
    process = scenario("handler", "cpu", blocker.argument)
    handler_thread = process.wait_event("block_started")["thread"]

    report = process.wait_event("stall_detected")
    assert process.events("block_finished") == []
    assert report["kind"] == "handler"
    assert report["cause"] == "python"
    assert report["name"] == "/demo.v1.Demo/Validate"
    assert report["request_id"] == "req-handler-42"
    assert report["thread"] == handler_thread
    assert report["culprit"].endswith("in block_on_cpu")

    blocker.release()
    ended = process.wait_event("handler_stalled")
    assert ended["cause"] == "python"
    assert ended["request_id"] == "req-handler-42"
    assert ended["duration"] >= report["stalled_for"]
    assert ended["stack"] == report["stack"]
    assert process.wait_exit() == 0


@pytest.mark.parametrize("kind", ["sleep", "offload-wait"])
def test_sync_handler_waiting_is_slow_not_stalled(
    kind: str, scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # A database query, or offloaded work: the handler waits ten thresholds and more.
    blocker = Blocker(kind, tmp_path)
    process = scenario("handler", kind, blocker.argument)
    process.wait_event("block_started")
    if kind == "sleep":
        time.sleep(1.0)  # the injected cause: the handler waits a second on "I/O"
        blocker.release()
    process.wait_event("block_finished")
    assert process.wait_exit() == 0
    assert process.events("stall_detected") == []
    assert process.events("handler_stalled") == []
    if kind == "sleep":
        slow = process.wait_event("handler_slow")
        assert slow["level"] == "info"
        assert slow["request_id"] == "req-handler-42"


def test_gil_holding_sync_handler_is_reported_with_the_dumped_stack(
    scenario: Callable[..., Scenario],
) -> None:
    process = scenario("handler", "regex")
    handler_thread = process.wait_event("block_started")["thread"]

    ended = process.wait_event("handler_stalled", timeout=60)
    assert ended["cause"] == "c_code"
    assert ended["request_id"] == "req-handler-42"
    assert ended["thread"] == handler_thread
    assert ended["stack_source"] == "faulthandler"
    assert ended["culprit"].endswith("in block_in_regex")
    assert process.wait_exit() == 0
