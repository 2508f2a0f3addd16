"""Structured logs: one event per line on stdout, with the request id in every line.

structlog renders both its own events and records from the standard library (uvicorn, grpc,
third-party libraries), so the output has one shape whatever produced it. The request id comes
from :mod:`.context`, ``trace_id`` and ``span_id`` from the current OpenTelemetry span; both
are carried into offload workers, which is why a line written there still names the request and
the trace it belongs to.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
import structlog.tracebacks
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor

from .context import current_request_id


def _add_request_context(_logger: object, _method: str, event: EventDict) -> EventDict:
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def _add_trace_context(_logger: object, _method: str, event: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` of the current span, as hex, the way trace UIs show them."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(span.trace_id))
        event.setdefault("span_id", trace.format_span_id(span.span_id))
    return event


def _static_fields(fields: Mapping[str, object]) -> Processor:
    def add(_logger: object, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


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
    shared: list[Processor] = [
        _add_request_context,
        _add_trace_context,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fields:
        shared.append(_static_fields(dict(fields)))
    output = stream if stream is not None else sys.stdout
    renderer: list[Processor]
    if fmt == "console":
        renderer = [structlog.dev.ConsoleRenderer(colors=output.isatty())]
    else:
        renderer = [
            structlog.processors.StackInfoRenderer(),
            # Tracebacks as data, without local variables: they may hold secrets or PII.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    # The standard library's records (uvicorn, grpc, other libraries) get the same processors
    # through a formatter; the service's own events skip the standard library altogether.
    # That costs half as much per line, and an access log line is written for every request.
    handler = logging.StreamHandler(output)
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
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda name="root", *_: NamedWriteLogger(output, name),
        cache_logger_on_first_use=True,
    )


def _dumps(value: object, **options: Any) -> str:
    """``json.dumps``, without building a new encoder for every line as it does when given
    options (structlog passes ``default``): that was a fifth of the cost of a line.
    """
    return _encoder(**options).encode(value)


@functools.cache
def _encoder(default: Callable[[object], object]) -> json.JSONEncoder:
    return json.JSONEncoder(default=default)


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structured logger; ``name`` (usually ``__name__``) appears as ``logger`` in each line."""
    logger: FilteringBoundLogger = structlog.get_logger(*([name] if name else []))
    return logger


class Sample:
    """Which of a stream of routine events to keep: the first, then one in ``every``.

    The access logs use it for fast successful requests; ``skipped`` is called for each one
    left out, so a counter can account for them. Safe on threads: ``next()`` on a counter
    is atomic.
    """

    def __init__(self, every: int, skipped: Callable[[], None]) -> None:
        self.every = every
        self.skipped = skipped
        self._seen = itertools.count()

    def keep(self) -> bool:
        if self.every == 1 or next(self._seen) % self.every == 0:
            return True
        self.skipped()
        return False


class NamedWriteLogger(structlog.WriteLogger):
    """structlog's plain file logger, with the name ``add_logger_name`` puts in each line."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name
