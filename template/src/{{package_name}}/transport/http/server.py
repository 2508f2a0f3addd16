"""``python -m <package>``: FastAPI on uvicorn, wired into the runtime.

The whole life of the process is :func:`serve`, top to bottom, the same as the gRPC servers':

    settings, logs -> port open (/livez answers, /readyz 503) -> warm-up -> resources open
    -> ready ... first SIGTERM/SIGINT -> not ready -> keep serving for the drain delay
    -> stop accepting, requests in flight finish within the grace -> resources closed
    -> offload pool and watchdog stopped -> exit 0 (1 if start-up failed)

uvicorn's ``Server.serve()`` runs as a task with its own signal handling switched off: its
handlers would stop listening at the first signal. The runtime's apply instead (a second
signal exits at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.loops.auto import auto_loop_factory

from ...resources import lifespan
from ...runtime.lifecycle import Runtime, StartupError, in_thread
from ...runtime.logging import configure_logging, get_logger
from ...runtime.settings import load_settings
from .app import create_app
from .protocol import bounded_protocol
from .settings import HttpSettings

log = get_logger(__name__)


def main() -> None:
    settings = load_settings(HttpSettings)
    configure_logging(settings.log_level, settings.log_format)
    # uvloop where it is installed (not on Windows), as uvicorn's own loop="auto" chooses.
    with asyncio.Runner(loop_factory=auto_loop_factory()) as runner:
        status = runner.run(serve(settings))
    raise SystemExit(status)


async def serve(settings: HttpSettings) -> int:
    """Serve until a signal has drained the service; the exit status."""
    runtime = Runtime(settings, asyncio.get_running_loop())
    runtime.signals.install(runtime.loop)
    warm_up = asyncio.wrap_future(in_thread(runtime.start))
    app = create_app(runtime, settings)
    server = Server(server_config(app, settings))
    serving: asyncio.Task[None] | None = None
    status = 0
    async with contextlib.AsyncExitStack() as resources:
        try:
            app.state.resources = await resources.enter_async_context(lifespan(settings))
            serving = asyncio.create_task(server.serve(), name="uvicorn")
            await server.wait_listening()  # /livez answers, /readyz says 503
            await warm_up
        except Exception as error:
            status = runtime.startup_failed(error)
        else:
            served = runtime.ready()
            await asyncio.wrap_future(in_thread(runtime.wait_for_shutdown))
            if served:  # a service that was never ready got no traffic to drain
                await asyncio.sleep(settings.drain_delay)
            log.info(
                "drain_delay_over",
                detail="no longer accepting connections; waiting for requests in flight",
                in_flight=len(server.server_state.tasks),
                shutdown_grace=settings.shutdown_grace,
            )
        server.should_exit = True  # stop accepting; requests in flight get the grace
        if serving is not None:
            await serving
    await asyncio.gather(warm_up, return_exceptions=True)
    await asyncio.wrap_future(in_thread(runtime.stop))
    return status


def server_config(app: ASGIApp, settings: HttpSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=bounded_protocol(settings),
        ws="none",
        lifespan="off",  # serve() opens the resources and starts the runtime
        log_config=None,  # uvicorn's records go through the service's structured logging
        access_log=False,  # the access log middleware writes it, with request ids
        server_header=False,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
    )


class Server(uvicorn.Server):
    """uvicorn's server, started and stopped by :func:`serve` alone."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._started_up = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the runtime owns SIGTERM and SIGINT

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn's way of saying it cannot listen; it logged why
            self.should_exit = True
        finally:
            self._started_up.set()
        if self.started:
            log.info(
                "http_listening",
                host=self.config.host,
                port=self.config.port,
                loop=type(asyncio.get_running_loop()).__module__,
                protocol=self.config.http_protocol_class.__name__,
                keep_alive_timeout=self.config.timeout_keep_alive,
            )

    async def wait_listening(self) -> None:
        """Return once the port is open; :class:`StartupError` if it cannot be."""
        await self._started_up.wait()
        if not self.started:
            target = f"{self.config.host}:{self.config.port}"
            raise StartupError(f"cannot listen on {target} (in use or not local)")
