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
from typing import Any

from starlette.types import Scope

from ...runtime.logging import get_logger

HANDLER_KEY = "handler_task"  # where the scope keeps the task handling the request
ABANDONED_KEY = "handler_abandoned"  # set in the scope once its client has gone away
CLIENT_CLOSED_REQUEST = 499

log = get_logger(__name__)


def abandon_handler(scope: Any) -> None:  # uvicorn types it as a TypedDict
    """Called by the connection when it is lost with ``scope``'s response unfinished."""
    task = scope.get(HANDLER_KEY)
    if task is not None and not task.done():
        scope[ABANDONED_KEY] = True
        task.cancel()


def end_quietly(task: asyncio.Task[object], scope: Scope) -> None:
    """After the cancellation has unwound the abandoned request's handler: the request
    ends normally, with nothing sent, and the log says what happened.
    """
    task.uncancel()
    log.info("request_abandoned", method=scope["method"], path=scope["path"])
