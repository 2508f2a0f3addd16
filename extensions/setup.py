"""``unfinished_setup(path)``: the commands a new project still needs, for copier's last message.

hooks/post_generate.py records the steps that failed (no uv, a Python it could not find, no
network) in a file outside the project; the message after copying reads it, so it says "not
ready: run ..." instead of "ready" when that is the truth.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path, PurePath

from jinja2 import Environment
from jinja2.ext import Extension


def unfinished_setup(destination: PurePath | str, is_grpc: bool) -> list[str]:
    """The commands that finish the set-up; without a record, a project with no lock file (the
    tasks were skipped) needs the lock and, for gRPC, the generated code."""
    # The record's location is defined once, in the hooks; load that module by its path.
    path = Path(__file__).resolve().parent.parent / "hooks" / "steps.py"
    spec = importlib.util.spec_from_file_location("copier_python_service_steps", path)
    assert spec is not None and spec.loader is not None
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    record: Path = steps.unfinished_record(Path(destination))
    if not record.exists():
        if (Path(destination) / "uv.lock").exists():
            return []
        return ["uv lock", "uv sync"] if is_grpc else ["uv lock"]
    commands = record.read_text(encoding="utf-8").split("\n")
    record.unlink()
    return [command for command in commands if command]


class SetupExtension(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.globals["unfinished_setup"] = unfinished_setup
