"""uvicorn with a drain: SIGTERM makes the service not ready, and it keeps serving for a while.

uvicorn on its own closes its listeners the moment SIGTERM arrives, while load balancers are
still sending new connections: those are refused. This server owns the signals instead:

1. SIGTERM (or SIGINT): the lifecycle moves to DRAINING, so ``/readyz`` answers 503 at once;
   everything else keeps being served for ``drain_delay`` seconds while load balancers notice.
2. Then uvicorn's own shutdown: stop accepting, close idle keep-alive connections, let the
   requests in flight finish within ``shutdown_grace`` seconds (the rest are cancelled).
3. The app's lifespan shutdown stops the offload pool and the stall watchdog; exit status 0.

A second SIGTERM or SIGINT at any point exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from ...runtime.lifecycle import Runtime, State
from ...runtime.logging import get_logger

log = get_logger(__name__)


class DrainingServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose shutdown on a signal starts with a drain delay."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._served = False
        runtime.lifecycle.add_listener(self._note_state)

    def _note_state(self, state: State) -> None:
        self._served = self._served or state is State.SERVING

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info(
                "http_listening",
                host=self.config.host,
                port=self.config.port,
                loop=type(asyncio.get_running_loop()).__module__,
                protocol=self.config.http_protocol_class.__name__,
                keep_alive_timeout=self.config.timeout_keep_alive,
            )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Replaces uvicorn's handlers, which stop listening at once and re-raise the signal
        # after shutdown (ending the process with a signal status instead of 0).
        loop = asyncio.get_running_loop()
        self.runtime.install_signal_handlers(loop)
        drain = loop.create_task(self._drain_then_exit(), name="drain")
        try:
            yield
        finally:
            drain.cancel()

    async def _drain_then_exit(self) -> None:
        await self.runtime.wait_for_shutdown_async()
        if self._served:  # a service that never became ready got no traffic to drain
            await asyncio.sleep(self.runtime.settings.drain_delay)
        log.info(
            "drain_delay_over",
            detail="no longer accepting connections; waiting for requests in flight",
            in_flight=len(self.server_state.tasks),
            shutdown_grace=self.runtime.settings.shutdown_grace,
        )
        self.should_exit = True
