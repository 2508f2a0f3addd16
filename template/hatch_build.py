"""Generate the gRPC code from proto/ whenever the package is built.

``uv sync`` installs the service in editable mode and ``uv build``/the container image build a
wheel; both run this hook, which runs ``scripts/protos.py``. So the ``*_pb2*`` modules are build
artifacts, made from the .proto files that are checked in (never committed themselves): they
cannot go stale, and a ``copier update`` that merges a .proto file cannot leave them behind.
uv rebuilds the package when a .proto file changes (``cache-keys`` in pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ProtoCodeHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        script = Path(self.root) / "scripts" / "protos.py"
        result = subprocess.run([sys.executable, str(script)], cwd=self.root, check=False)  # noqa: S603
        if result.returncode != 0:
            # protos.py has said what went wrong (a broken .proto file, a missing tool).
            raise SystemExit(f"generating the gRPC code from proto/ failed ({script.name})")
