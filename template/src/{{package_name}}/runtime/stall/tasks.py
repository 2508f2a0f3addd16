"""The request a blocked event loop is working on, read from the watchdog thread.

``asyncio.current_task(loop)`` names the task whose step is running. Its request id and
traceparent live in its context: ``Task.get_context()`` from Python 3.12 on. On 3.11
:func:`install_task_factory` remembers the context of every task the loop creates (the very
``Context`` the task runs in, so a request id bound inside the task later is visible too).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Coroutine, Generator
from typing import Any, cast

from .. import context

_contexts: weakref.WeakKeyDictionary[asyncio.Future[Any], contextvars.Context] = (
    weakref.WeakKeyDictionary()
)
_TASKS_KNOW_THEIR_CONTEXT = hasattr(asyncio.Task, "get_context")


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """On Python 3.11, make ``loop`` remember each new task's context (keeps any factory)."""
    if _TASKS_KNOW_THEIR_CONTEXT:
        return
    previous = loop.get_task_factory()

    def remembering(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        context: contextvars.Context | None = None,
    ) -> asyncio.Future[Any]:
        task_context = context if context is not None else contextvars.copy_context()
        task: asyncio.Future[Any]
        if previous is not None:
            # Factories take the context as a keyword since 3.11; typeshed does not say so.
            task = cast(Any, previous)(loop, coro, context=task_context)
        else:
            task = asyncio.Task(cast(Any, coro), loop=loop, context=task_context)
        _contexts[task] = task_context
        return task

    loop.set_task_factory(remembering)


def running_task(loop: asyncio.AbstractEventLoop | None) -> dict[str, object]:
    """The task ``loop`` is running now, with its request id and trace id (what is known)."""
    try:
        task = asyncio.current_task(loop)
    except RuntimeError:  # no loop (the watchdog thread runs none of its own)
        return {}
    if task is None:
        return {}
    found: dict[str, object] = {"task": task.get_name()}
    get_context = getattr(task, "get_context", None)  # Python 3.12 and later
    values = get_context() if get_context is not None else _contexts.get(task)
    if values is not None:
        found.update(_request(**context.snapshot_of(values)))
    return found


def current_request() -> dict[str, object]:
    """The request id and trace id bound in the calling thread (a sync handler's)."""
    return _request(context.current_request_id(), context.current_traceparent())


def _request(request_id: str | None, traceparent: str | None) -> dict[str, object]:
    found: dict[str, object] = {}
    if request_id is not None:
        found["request_id"] = request_id
    if traceparent is not None:
        found["traceparent"] = traceparent
        found["trace_id"] = traceparent.split("-")[1]
    return found
