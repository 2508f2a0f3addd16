"""Structured logs: one event per line on stdout, with the request id in every line.

structlog renders both its own events and records from the standard library (uvicorn, grpc,
third-party libraries), so the output has one shape whatever produced it. The request id comes
from :mod:`.context`, ``trace_id`` and ``span_id`` from the current OpenTelemetry span; both
are carried into offload workers, which is why a line written there still names the request and
the trace it belongs to.

Writing is buffered (:class:`LineBuffer`): debug and info lines reach the stream within
``FLUSH_INTERVAL`` seconds, in batches, rather than one system call each; a warning or an
error goes out at once, with every line before it. The access log writes a line for every
request, and this is what keeps that cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
import structlog.tracebacks
from opentelemetry import trace
from prometheus_client import Counter
from structlog.typing import EventDict, FilteringBoundLogger, Processor

from .context import current_request_id

# structlog calls a method per level; these two are spelled differently in the output.
LEVEL_NAMES = {"warn": "warning", "exception": "error"}


def _standard_fields(static: Mapping[str, object]) -> Processor:
    """What every line has, added in one step (it runs for every line): the level, the
    logger's name, the time, the request id and the trace and span ids of the request being
    handled, and the ``static`` fields.
    """
    static_items = tuple(static.items())

    def add(logger: Any, method: str, event: EventDict) -> EventDict:
        record = event.get("_record")  # a standard library record, formatted by structlog
        name = record.name if record is not None else logger.name
        return _add_standard(event, LEVEL_NAMES.get(method, method), name, static_items)

    return add


def _stack_as_text(logger: Any, method: str, event: EventDict) -> EventDict:
    """A stall report's ``stack`` (a list of frames, outermost first) as the text block the
    console renderer expects under that key: it would fail on a list, in the stall watchdog."""
    stack = event.get("stack")
    if isinstance(stack, list):
        event["stack"] = "\n".join(str(frame) for frame in stack)
    return event


def _add_standard(
    event: EventDict, level: str, name: str, static_items: tuple[tuple[str, object], ...]
) -> EventDict:
    event.setdefault("level", level)
    event.setdefault("logger", name)
    event.setdefault("timestamp", _timestamp())
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:  # as hex, the way trace UIs show them
        event.setdefault("trace_id", trace.format_trace_id(span.trace_id))
        event.setdefault("span_id", trace.format_span_id(span.span_id))
    for key, value in static_items:
        event.setdefault(key, value)
    return event


class _Output:
    """What :func:`configure_logging` chose, for :class:`RequestLogger` to read per line."""

    level = logging.INFO
    json = True
    static_items: tuple[tuple[str, object], ...] = ()


_output = _Output()


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
    fields: Mapping[str, object] | None = None,
) -> None:
    """Route structlog and the standard library's logging to one handler on ``stream``.

    ``fmt`` is ``json`` (one JSON object per line, for log pipelines) or ``console``
    (aligned text for a terminal). ``fields`` are added to every line (e.g. a worker's pid).
    Calling it again replaces the previous configuration.
    """
    shared: list[Processor] = [_standard_fields(fields or {})]
    output = stream if stream is not None else sys.stdout
    renderer: list[Processor]
    if fmt == "console":
        renderer = [_stack_as_text, structlog.dev.ConsoleRenderer(colors=output.isatty())]
    else:
        renderer = [
            structlog.processors.StackInfoRenderer(),
            # Tracebacks as data, without local variables: they may hold secrets or PII.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    lines = _lines.use(output)
    # The standard library's records (uvicorn, grpc, other libraries) get the same processors
    # through a formatter, and go through the same buffer, so the output keeps its order; the
    # service's own events skip the standard library altogether, which halves their cost.
    handler = logging.StreamHandler(lines)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _output.level = logging.getLevelName(level.upper())
    _output.json = fmt != "console"
    _output.static_items = tuple((fields or {}).items())
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_output.level),
        logger_factory=lambda name="root", *_: BufferedLogger(lines, name),
        cache_logger_on_first_use=True,
    )


class _Clock:
    """Now in ISO 8601, UTC, to the microsecond. The date and time of day are formatted once
    a second: a ``datetime`` per line would cost more than all the other fields.
    """

    def __init__(self) -> None:
        self._second = (0, "1970-01-01T00:00:00")  # one tuple: threads read it whole

    def now(self) -> str:
        now = time.time()
        second, formatted = self._second
        if int(now) != second:
            second = int(now)
            formatted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, formatted)
        return f"{formatted}.{int((now - second) * 1e6):06d}Z"


_timestamp = _Clock().now


def _dumps(value: object, **options: Any) -> str:
    """JSON with orjson, a tenth of the standard library's cost per line. What orjson refuses
    (an integer wider than 64 bits, a non-string key) is written by the standard library.
    """
    default = options.get("default")
    try:
        return orjson.dumps(value, default=default).decode()
    except TypeError:
        return json.dumps(value, default=default, separators=(",", ":"))


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structured logger; ``name`` (usually ``__name__``) appears as ``logger`` in each line."""
    logger: FilteringBoundLogger = structlog.get_logger(*([name] if name else []))
    return logger


class RequestLogger:
    """The logger of an event written for every request: the access log.

    An info or debug line in JSON is rendered here in one step: the same line, with the same
    fields in the same order, as structlog writes through its processors, at less than half the
    cost. Anything else (the console format, an exception to render) goes through structlog.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._structlog = get_logger(name)

    def info(self, event: str, **fields: Any) -> None:
        self._write(logging.INFO, "info", event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._write(logging.DEBUG, "debug", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._structlog.error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._structlog.exception(event, **fields)

    def _write(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if level < _output.level:
            return
        if not _output.json:
            getattr(self._structlog, method)(event, **fields)
            return
        fields["event"] = event
        _add_standard(fields, method, self.name, _output.static_items)
        _lines.write(_dumps(fields) + "\n")


class Sample:
    """Which of a stream of routine events to keep: every one up to ``per_second`` in each
    second, and one in ``every`` beyond that (zap's production sampler works the same way).

    The access logs use it for fast successful requests: a quiet service logs all of them, a
    busy one a bounded number of lines a second, whose cost no longer grows with its traffic.
    ``skipped`` counts those left out, for a counter to report (``metrics.SkippedCounter``).
    With no allowance (``per_second=0``) the count runs on across seconds: one in ``every`` of
    all. Threads may race on the counts: a line more or less is not worth a lock per request.
    """

    def __init__(self, per_second: int, every: int) -> None:
        self.per_second = per_second
        self.every = every
        self.skipped = 0
        self._second = 0
        self._seen = 0

    def keep(self) -> bool:
        if self.every == 1:
            return True
        if self.per_second:
            second = int(time.monotonic())
            if second != self._second:
                self._second = second
                self._seen = 0
        beyond = self._seen - self.per_second
        self._seen += 1
        if beyond < 0 or beyond % self.every == 0:
            return True
        self.skipped += 1
        return False


FLUSH_INTERVAL = 0.1  # seconds an info line may wait in the buffer


class LineBuffer:
    """Log lines on their way to a stream, written in batches.

    ``write`` keeps a line; ``flush`` writes what is kept in one call. A thread flushes
    ``FLUSH_INTERVAL`` seconds after a line starts to wait (and sleeps while none does), and so
    do the exit of the process and a fork (else the child would write the parent's lines
    again); a worker process flushes after each call. What a ``SIGKILL`` or a crash of the
    interpreter interrupts is lost, at most ``FLUSH_INTERVAL`` seconds of debug and info
    lines: warnings and errors are flushed as they are written (:class:`BufferedLogger`).

    It is the stream of the standard library's handler too: its ``flush`` after every record
    keeps those records in order with the service's own lines.

    A write that fails (a closed or broken stdout) loses its batch and nothing else: like the
    standard library's handlers, the buffer never raises into the code that logged (a request,
    the stall watchdog), and its thread goes on flushing. ``log_lines_lost_total`` counts the
    lines lost; stderr gets a line when writing starts to fail and when it works again.
    """

    def __init__(self) -> None:
        self.stream: TextIO = sys.stdout
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._waiting = threading.Event()  # set while lines wait to be written
        self._flusher: threading.Thread | None = None
        self._lost = 0  # lines lost since writing last worked
        os.register_at_fork(before=self.flush, after_in_child=self._after_fork)

    def use(self, stream: TextIO) -> LineBuffer:
        """Write to ``stream`` from now on (what is kept goes to the previous one first)."""
        self.flush()
        self.stream = stream
        if self._flusher is None:
            self._start_flusher()
        return self

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_often, name="log-flush")
        self._flusher.daemon = True
        self._flusher.start()

    def _after_fork(self) -> None:
        """In a forked child: new locks (another thread may have held the parent's as it
        forked, and nothing would release them here) and a flushing thread of its own.
        """
        self._lines = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._waiting = threading.Event()
        if self._flusher is not None:
            self._start_flusher()

    def write(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            if len(self._lines) == 1:
                self._waiting.set()

    def flush(self) -> None:
        # The lines are taken under one lock and written under another: a request's thread
        # adding a line does not wait for a write to a slow pipe, and batches keep their order.
        with self._writing:
            with self._lock:
                lines, self._lines = self._lines, []
                self._waiting.clear()
            if lines:
                self._write(lines)

    def _write(self, lines: list[str]) -> None:
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError) as error:  # ValueError: the stream was closed
            LOG_LINES_LOST.inc(len(lines))
            if not self._lost:
                _tell_stderr(f"log lines lost: writing them failed ({error!r})")
            self._lost += len(lines)
            return
        if self._lost:
            _tell_stderr(f"log lines written again, after {self._lost} lost")
            self._lost = 0

    def unwritten(self) -> str:
        """The lines kept but not yet written, read without the lock: for a signal handler
        about to end the process at once, whose interrupted thread may hold it.
        """
        return "".join(self._lines)

    def _flush_often(self) -> None:
        # Asleep while nothing waits: an idle service has no wake-ups for its logs.
        while True:
            self._waiting.wait()
            time.sleep(FLUSH_INTERVAL)
            self.flush()


LOG_LINES_LOST = Counter(
    "log_lines_lost", "Log lines the service could not write (its output failed or was closed)."
)


def _tell_stderr(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr may have gone the same way
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


# At exit, the standard library's logging flushes its handler, whose stream this is.
_lines = LineBuffer()
flush_logs = _lines.flush
unwritten_lines = _lines.unwritten


class BufferedLogger:
    """structlog's logger: one line per event into a :class:`LineBuffer`, flushed at once
    from warning level up. ``name`` is what ``add_logger_name`` puts in each line.
    """

    def __init__(self, lines: LineBuffer, name: str) -> None:
        self.lines = lines
        self.name = name

    def msg(self, message: str) -> None:
        self.lines.write(message + "\n")

    def flushed(self, message: str) -> None:
        self.lines.write(message + "\n")
        self.lines.flush()

    debug = info = log = msg
    warn = warning = err = error = critical = exception = fatal = failure = flushed
