"""Stall detection in a bare runtime: what needs no server.

Each scenario blocks a real event loop (or a watched sync handler) in a process of its own. The
classes of docs/runtime/stall-detection.md are proven in the real servers, by
test_service_stalls.py; here are a block that never ends, a stall as a span of the trace of
the request that blocked, and a handler waiting for offloaded work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from otlp_receiver import Receiver, attributes
from runtime_support import Scenario, wait_for_text

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
    """What a scenario blocks on (a file's absence), and how the test lets it go."""

    def __init__(self, directory: Path) -> None:
        self.release_file = directory / "release"

    @property
    def argument(self) -> str:
        return str(self.release_file)

    def release(self) -> None:
        self.release_file.touch()


def assert_names_the_request(event: dict[str, object]) -> None:
    assert event["request_id"] == REQUEST_ID
    assert event["trace_id"] == TRACE_ID


def stall_and_exit(scenario: Callable[..., Scenario], where: str, tmp_path: Path) -> None:
    """A CPU-bound stall of the ``where`` scenario, reported, then over; the process exits 0
    (and flushes its spans on the way out)."""
    blocker = Blocker(tmp_path)
    process = scenario(where, "cpu", blocker.argument)
    process.wait_event("stall_detected")
    blocker.release()
    process.wait_event("event_loop_stalled" if where == "loop" else "handler_stalled")
    assert process.wait_exit() == 0


def test_a_stall_is_reported_in_the_console_log_format_too(
    scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # The console renderer takes a "stack" field for text; a report's is a list of frames.
    # Had the watchdog failed on it, no stall would be reported from then on.
    blocker = Blocker(tmp_path)
    process = scenario("handler", "cpu", blocker.argument, log_format="console")
    process.stdout.wait_for("stall_detected", timeout=15)
    blocker.release()
    process.stdout.wait_for("handler_stalled", timeout=15)
    assert process.wait_exit() == 0
    frames = [line.strip() for line in process.output().splitlines()]
    assert any(frame.endswith("in block_on_cpu") for frame in frames), process.output()
    assert "stall_watchdog_error" not in process.output()


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


def test_sync_handler_waiting_for_offloaded_work_is_not_stalled(
    scenario: Callable[..., Scenario],
) -> None:
    # The handler waits ten thresholds for the offload pool, which is what handlers should do.
    process = scenario("handler", "offload-wait")
    process.wait_event("block_started")
    process.wait_event("block_finished")
    assert process.wait_exit() == 0
    assert process.events("stall_detected") == []
    assert process.events("handler_stalled") == []
