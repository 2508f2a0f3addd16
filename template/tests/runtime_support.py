"""Helpers for the runtime tests: run a scenario of ``runtime_scenarios.py`` and read its events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ServiceProcess, service_env, wait_until

SCENARIOS = Path(__file__).with_name("runtime_scenarios.py")


class Scenario(ServiceProcess):
    """One scenario process; its stdout holds one JSON event per line, stderr raw dumps."""

    script = SCENARIOS  # the program to run; subclasses run others

    def __init__(self, *args: str, **settings: object) -> None:
        self._start([str(self.script), *args], service_env(**settings))


def dump_section(lines: list[str], thread: str) -> list[str]:
    """The frames faulthandler printed for ``thread`` (``0x...``), innermost first."""
    for index, line in enumerate(lines):
        if line.startswith(f"Thread {thread}") or line.startswith(f"Current thread {thread}"):
            section = []
            for frame in lines[index + 1 :]:
                if not frame.startswith("  File"):
                    break
                section.append(frame)
            return section
    return []


def wait_for_text(path: Path, text: str, timeout: float = 30.0) -> str:
    """The content of ``path`` once it contains ``text``; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.02)
    pytest.fail(f"{path} did not come to contain {text!r} within {timeout} s")


class RecordingLogger:
    """Stands in for a module's ``log`` (``monkeypatch.setattr(module, "log", ...)``): the events
    of the given ``levels`` are kept with their fields, the others go to ``logger``."""

    def __init__(self, logger: Any, levels: tuple[str, ...] = ("warning", "exception")) -> None:
        self.logger = logger
        self.levels = levels
        self.events: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, level: str) -> Any:
        if level not in self.levels:
            return getattr(self.logger, level)

        def record(event: str, **fields: object) -> None:
            self.keep(event, fields)

        return record

    def keep(self, event: str, fields: dict[str, object]) -> None:
        self.events.append((event, fields))

    def named(self, event: str) -> list[dict[str, object]]:
        """The fields of every ``event`` kept, oldest first."""
        return [fields for name, fields in self.events if name == event]

    def one(self, event: str) -> dict[str, object]:
        """The fields of the one ``event`` logged. Waits for it: the thread that logs it may do
        so just after the effect the test saw (a call answered, a slot given back)."""
        wait_until(lambda: bool(self.named(event)), what=f"{event} to be logged")
        [fields] = self.named(event)
        return fields
