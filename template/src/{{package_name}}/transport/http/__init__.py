"""The HTTP transport: FastAPI served by uvicorn (uvloop + httptools), one process.

``python -m`` the package runs :func:`main`. Scale with more containers, not more worker
processes in one: each process has its own event loop, stall watchdog and offload pool.
"""

from __future__ import annotations

import math
import sys

import uvicorn

from ...runtime.lifecycle import Runtime
from ...runtime.logging import configure_logging
from ...runtime.settings import load_settings
from .app import create_app
from .server import DrainingServer
from .settings import HttpSettings

__all__ = ["main"]


def main() -> None:
    """Read the settings, then serve until SIGTERM has drained the service."""
    settings = load_settings(HttpSettings)
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime(settings)
    app = create_app(runtime, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio" if sys.platform == "win32" else "uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        log_config=None,  # uvicorn's records go through the service's structured logging
        access_log=False,  # RequestContextMiddleware writes the access log, with request ids
        server_header=False,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
    )
    DrainingServer(config, runtime).run()
    if app.state.startup_failed:
        raise SystemExit(1)
