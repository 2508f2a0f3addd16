"""The child's side of a worker process: receive a call, run it in its request context, reply.

Over its own pipe, the parent sends ``(fn, args, kwargs, request_values, submitted_ns)`` per
call, ``None`` to stop it; the worker answers ``"ready"`` once started, then per call
``(status, payload, remote_traceback)``: ``"ok"`` and the result, or ``"error"`` and the exception.
"""

from __future__ import annotations

import ctypes
import faulthandler
import multiprocessing.forkserver
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .. import context, tracing
from ..log_lines import flush_logs
from ..logging import configure_logging
from .errors import OffloadError, contained
from .job import label_of
from .spans import run_in_span

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the forkserver, which exits when the
    service is gone) dies: busy in C code, a worker would never notice its pipe closing.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def release_forkserver_pipe() -> None:
    """Close this worker's copy of the pipe that tells the forkserver the service is gone (the
    forkserver hands one to each child): kept, it would keep the forkserver alive after the
    service died, and so this worker (:func:`die_with_parent`).
    """
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        os.close(fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def worker_main(conn: Connection, log_level: str, log_format: str, nice: int) -> None:
    """The loop of a worker process."""
    release_forkserver_pipe()
    die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        os.nice(nice)  # the service's event loop wins a contended CPU
    faulthandler.enable()  # a segfault leaves a Python stack on stderr
    configure_logging(log_level, log_format, fields={"worker_pid": os.getpid()})
    # Its own tracer provider and exporter, from the environment the service was started with
    # (already checked there). Spans and log lines are flushed after each call: a worker may
    # be killed.
    tracing.configure()
    conn.send("ready")
    try:
        _serve(conn)
    finally:
        tracing.shutdown()
        flush_logs()


def _serve(conn: Connection) -> None:
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        except Exception as error:  # e.g. the function cannot be imported here
            _reply(conn, "error", error)
            continue
        if message is None:
            return
        fn, args, kwargs, values, submitted_ns = message
        label = label_of(fn)
        try:
            with context.restore(values):
                result = run_in_span(
                    fn, args, kwargs, label=label, executor="process", submitted_ns=submitted_ns
                )
        except BaseException as error:  # handed to the caller; SystemExit must not end us
            _reply(conn, "error", contained(error, label), error)
        else:
            _reply(conn, "ok", result)
        del message, fn, args, kwargs
        tracing.flush()
        flush_logs()


def _reply(
    conn: Connection, status: str, payload: Any, raised: BaseException | None = None
) -> None:
    remote_tb = ""
    if isinstance(payload, BaseException):
        remote_tb = "".join(traceback.format_exception(raised or payload))
        payload.__traceback__ = None
        payload.__cause__ = None
    try:
        conn.send((status, payload, remote_tb))
    except Exception as error:  # the result or exception is not picklable
        kind = "result" if status == "ok" else f"exception {type(payload).__name__}: {payload}"
        conn.send(("error", OffloadError(f"cannot send the {kind} back: {error}"), remote_tb))
