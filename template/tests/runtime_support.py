"""Helpers for the runtime tests: run a scenario of ``runtime_scenarios.py`` and read its events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import OutputLog, service_env

SCENARIOS = Path(__file__).with_name("runtime_scenarios.py")


def logged_events(output: OutputLog, name: str) -> list[dict[str, Any]]:
    """Every JSON log event called ``name`` in ``output`` so far, in order."""
    found = []
    for line in list(output.lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            found.append(event)
    return found


class Scenario:
    """One scenario process; its stdout holds one JSON event per line, stderr raw dumps."""

    script = SCENARIOS  # the program to run; subclasses run others

    def __init__(self, *args: str, **settings: object) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(self.script), *args],
            env=service_env(**settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout = OutputLog()
        self.stderr = OutputLog()
        self.stdout.follow(self.process.stdout)
        self.stderr.follow(self.process.stderr)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every logged event called ``name`` so far, in order."""
        return logged_events(self.stdout, name)

    def wait_event(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first event called ``name``; fails the test at the deadline."""
        self.stdout.wait_for(f'"event": "{name}"', timeout)
        return self.events(name)[0]

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            tail = (self.stdout.text() + "\n" + self.stderr.text())[-4000:]
            pytest.fail(f"the scenario did not exit within {timeout} s:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


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
