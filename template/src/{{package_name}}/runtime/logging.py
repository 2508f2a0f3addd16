"""Structured logs: one event per line on stdout, with the request id in every line.

structlog renders both its own events and records from the standard library (uvicorn, grpc,
third-party libraries), so the output has one shape whatever produced it. The request id comes
from :mod:`.context`, ``trace_id`` and ``span_id`` from the current OpenTelemetry span; both
are carried into offload workers, which is why a line written there still names the request and
the trace it belongs to.

Writing is buffered (:mod:`.log_lines`): debug and info lines reach the stream in batches,
warnings and errors at once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
import structlog.tracebacks
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor

from .context import current_request_id
from .log_lines import LINES, BufferedLogger

# structlog calls a method per level; these two are spelled differently in the output.
LEVEL_NAMES = {"warn": "warning", "exception": "error"}


def _standard_fields(logger: Any, method: str, event: EventDict) -> EventDict:
    """What every line has, added in one step (it runs for every line): the level, the
    logger's name, the time, the request id and the trace and span ids of the request being
    handled, and the fields given to :func:`configure_logging`.
    """
    record = event.get("_record")  # a standard library record, formatted by structlog
    name = record.name if record is not None else logger.name
    return _add_standard(event, LEVEL_NAMES.get(method, method), name)


def _stack_as_text(logger: Any, method: str, event: EventDict) -> EventDict:
    """A stall report's ``stack`` (a list of frames, outermost first) as the text block the
    console renderer expects under that key: it would fail on a list, in the stall watchdog."""
    stack = event.get("stack")
    if isinstance(stack, list):
        event["stack"] = "\n".join(str(frame) for frame in stack)
    return event


def _add_standard(event: EventDict, level: str, name: str) -> EventDict:
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
    for key, value in _output.static_items:
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
    shared: list[Processor] = [_standard_fields]
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
    LINES.use(output)
    # The standard library's records (uvicorn, grpc, other libraries) get the same processors
    # through a formatter, and go through the same buffer, so the output keeps its order; the
    # service's own events skip the standard library altogether, which halves their cost.
    handler = logging.StreamHandler(LINES)
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
        logger_factory=lambda name="root", *_: BufferedLogger(name),
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
        _add_standard(fields, method, self.name)
        LINES.write(_dumps(fields) + "\n")


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
