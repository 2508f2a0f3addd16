"""Stalls the service's test programs inject on request, one cause each.

``python -m http_support`` and ``python -m grpc_support`` run the real service plus a test-only
route, ``GET /v1/test/stall/{kind}?argument=...``, or method, ``/test.Failing/Stall`` (its
request's bytes are ``kind argument``). Its handler calls :func:`stall_async` on the event loop,
or :func:`stall_sync` on a sync server's handler thread, with the request's id and trace bound
as for any other request. Every block waits for something the test controls (a file appearing,
a byte on a socket) or is sized by the test (a regex, a garbage graph), so a report observed
before the release was made during the stall.

    cpu FILE      pure Python until FILE exists
    sleep FILE    sleeps (a system call) until FILE exists
    socket PORT   a blocking read of a connection to the test's PORT
    regex SIZE    C code that holds the GIL: a regex backtracking on SIZE characters
    gc SIZE       a forced full collection of SIZE cycles, built beforehand off the loop
    gil-hog SIZE  (event loop only) another thread holds the GIL in the regex meanwhile
    wait FILE     awaits FILE off the loop (on a handler thread: waits for it): not a stall
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable

from runtime_scenarios import BLOCKS, GRAPH, block_in_sleep, finished, garbage_graph, hog_the_gil, log


def build_graph(size: str) -> None:
    """The cycles ``gc`` collects, with automatic collection off: only the forced one walks them."""
    gc.disable()
    GRAPH.extend(garbage_graph(int(size)))


# What runs off the blocked thread, before the block: the handler awaits (or joins) it.
ELSEWHERE: dict[str, Callable[[str], None]] = {
    "gc": build_graph,
    "gil-hog": hog_the_gil,  # the event loop merely waits for the GIL meanwhile
    "wait": block_in_sleep,
}
# What blocks the thread the request runs on (the event loop, or a sync handler's thread).
HERE = ("cpu", "sleep", "socket", "regex", "gc")


def parse(request: bytes) -> tuple[str, str]:
    """``kind`` and ``argument`` from a gRPC request's bytes, ``b"kind argument"``."""
    kind, _, argument = request.decode().partition(" ")
    return kind, argument


async def stall_async(kind: str, argument: str) -> None:
    """The test route of an asyncio server: block its event loop with ``kind``."""
    requested(kind)
    if kind in ELSEWHERE:
        await asyncio.to_thread(ELSEWHERE[kind], argument)
    stall_here(kind, argument)


def stall_sync(kind: str, argument: str) -> None:
    """The test method of the thread-pool server: block its handler thread with ``kind``."""
    requested(kind)
    if kind in ELSEWHERE:
        helper = threading.Thread(target=ELSEWHERE[kind], args=(argument,), name="stall-helper")
        helper.start()
        helper.join()
    stall_here(kind, argument)


def requested(kind: str) -> None:
    log.info("stall_requested", kind=kind, thread=f"0x{threading.get_ident():016x}")


def stall_here(kind: str, argument: str) -> None:
    if kind in HERE:
        BLOCKS[kind](argument)
        finished(kind)
