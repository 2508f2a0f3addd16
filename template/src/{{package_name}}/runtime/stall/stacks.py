"""Stacks as lists of ``file:line in function`` (outermost first), and which frame to blame.

Whether taken by ``sys._current_frames()``, from the text faulthandler writes while C code holds
the GIL, or from the frame a garbage collection paused, a report's stack has the same shape.
"""

from __future__ import annotations

import re
import sysconfig
import traceback
from pathlib import Path
from types import FrameType

MAX_FRAMES = 60

# Frames from here are rarely what to fix: the culprit is the innermost frame outside them.
# The watchdog's own code is one of them: its gc callback runs on the thread a collection
# paused, and may be on top of the stack when the stack is taken.
_OWN = f"{Path(__file__).parent}/"
_NOT_TO_BLAME = tuple(
    {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"], "<frozen ", _OWN}
)
_THREAD_HEADER = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-f]+)")
_FRAME_LINE = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+|\?\?\?) in (?P<name>.*)$')


def thread_label(ident: int) -> str:
    """A thread id spelt the way faulthandler prints it (``0x00007f...``)."""
    return f"0x{ident:016x}"


def format_stack(frame: FrameType | None) -> list[str]:
    """``file:line in function`` for each frame, outermost first, innermost last."""
    if frame is None:
        return []
    # Without the lines' text, which would be read from the source files: a gc callback
    # formats the stack of the thread a collection paused, and must not wait for a disk.
    summary = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=MAX_FRAMES, lookup_lines=False
    )
    return [f"{entry.filename}:{entry.lineno} in {entry.name}" for entry in reversed(summary)]


def outside_the_watchdog(frame: FrameType | None) -> FrameType | None:
    """The innermost frame of ``frame``'s stack that is not the watchdog's own: for a thread in
    the watchdog's gc callback, the code the collection paused."""
    while frame is not None and frame.f_code.co_filename.startswith(_OWN):
        frame = frame.f_back
    return frame


def culprit(stack: list[str]) -> str | None:
    """The innermost frame of ``stack`` outside the standard library and the watchdog (or the
    innermost one)."""
    for entry in reversed(stack):
        if not entry.startswith(_NOT_TO_BLAME):
            return entry
    return stack[-1] if stack else None


def parse_faulthandler_dump(text: str) -> dict[str, list[str]]:
    """Each thread's stack in a faulthandler dump, keyed by :func:`thread_label`, outermost
    frame first like :func:`format_stack`. When the text holds several dumps, the last wins."""
    stacks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = _THREAD_HEADER.match(line)
        if header is not None:
            current = stacks[f"0x{int(header[1], 16):016x}"] = []
            continue
        frame = _FRAME_LINE.match(line)
        if frame is not None and current is not None:
            current.insert(0, f"{frame['file']}:{frame['line']} in {frame['name']}")
        elif not line.strip():
            current = None
    return stacks
