"""A request whose client has gone away stops: its handler task is cancelled.

uvicorn notices a closed connection but lets the handler run on: a client that gives up after
a second leaves its offloaded work holding a worker (for a never-ending regex: forever), while
the client retries and queues more. Here the connection (``protocol.py``) cancels the task of
the request it was serving when it is lost before the response was complete; the cancellation
reaches ``await offload(...)``, which drops the queued call or stops its worker process.

The request's record (``middleware.py``) registers the task and ends the request quietly: the
client is gone, so there is nothing to answer. The access log records it with status 499,
the code proxies use for "client closed request".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

from ...runtime.logging import get_logger

HANDLER_KEY = "handler_task"  # where the scope keeps the request's HandlerTask
CLIENT_CLOSED_REQUEST = 499

log = get_logger(__name__)


class HandlerTask:
    """The task handling one request, for its connection to stop if the client goes away."""

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.abandoned = False

    def abandon(self) -> None:
        if not self.task.done():
            self.abandoned = True
            self.task.cancel()

    def end_quietly(self, scope: Scope) -> None:
        """After the cancellation has unwound the abandoned request's handler: the request
        ends normally, with nothing sent, and the log says what happened.
        """
        self.task.uncancel()
        log.info("request_abandoned", method=scope["method"], path=scope["path"])


def abandon_handler(scope: Mapping[str, Any]) -> None:
    """Called by the connection when it is lost with ``scope``'s response unfinished."""
    handler = scope.get(HANDLER_KEY)
    if isinstance(handler, HandlerTask):
        handler.abandon()
