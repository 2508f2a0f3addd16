"""The service's Prometheus metrics, registered once in the default registry.

The transports expose the registry (``/metrics`` over HTTP, or :func:`start_metrics_server`
next to a gRPC server) and define their request metrics (``transport/*/metrics.py``) with
:class:`RequestHistogram`, :class:`SkippedCounter` and :func:`request_exemplar`; the rest is
updated by the runtime itself.
``docs/runtime/metrics.md`` explains each one and what to alert on.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, insort
from collections.abc import Iterator
from itertools import accumulate
from wsgiref.simple_server import WSGIServer

from opentelemetry import trace
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    Exemplar,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .context import current_traceparent
from .logging import Sample

# Loop lag is small when healthy and seconds when something blocks: cover both ends.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# OpenTelemetry's boundaries for request durations (from 5 ms to 10 s), plus 1 and 2.5 ms below
# them, where light requests land, and 30 s above. Queries written for the recommended
# boundaries work unchanged: every one of them is here.
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 30.0,
)  # fmt: skip

EVENTLOOP_LAG = Histogram(
    "eventloop_lag_seconds",
    "How late the event loop ran its heartbeat timer (sampled every LAG_INTERVAL).",
    buckets=_LAG_BUCKETS,
)
STALLS = Counter(
    "stalls",
    "Stalls longer than the threshold, by kind (event_loop, handler, process) and cause "
    "(python, c_code, syscall, gil_wait, gc, paused).",
    ["kind", "cause"],
)
STALL_DURATION = Histogram(
    "stall_duration_seconds",
    "How long each stall lasted, by kind and cause.",
    ["kind", "cause"],
    buckets=_STALL_BUCKETS,
)
SLOW_HANDLERS = Counter(
    "slow_handlers",
    "Sync handlers that took longer than the stall threshold while waiting (not stalls).",
)


class LoopLagWindow(Collector):
    """Loop lag since the previous scrape, as Node.js reports it.

    ``eventloop_lag_{min,max,mean,p50,p90,p99}_seconds`` cover the heartbeats since the last
    scrape (the window starts again at every scrape, as in Node.js's prom-client); a heartbeat
    that is overdue right now counts with its lag so far, so a loop that is stuck shows it even
    before the heartbeat runs. ``eventloop_utilization`` is the share of the window the loop
    thread spent on CPU.
    """

    _MAX_SAMPLES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lags: list[float] = []
        self._due: float | None = None
        self._cpu: tuple[float, float] | None = None  # (monotonic, loop thread CPU) at a beat
        self._cpu_scraped: tuple[float, float] | None = None

    def watch(self, due: float) -> None:
        with self._lock:
            self._due = due

    def beat(self, lag: float, now: float, cpu: float, next_due: float | None) -> None:
        with self._lock:
            if len(self._lags) < self._MAX_SAMPLES:
                self._lags.append(lag)
            self._due = next_due
            self._cpu = (now, cpu)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            lags, self._lags = sorted(self._lags), []
            due, cpu, scraped = self._due, self._cpu, self._cpu_scraped
            self._cpu_scraped = cpu
        if due is None and not lags:
            return  # no loop is watched in this process
        if due is not None and (overdue := time.monotonic() - due) > 0:
            insort(lags, overdue)
        lags = lags or [0.0]  # no heartbeat in the window: every value is 0
        values = {"min": lags[0], "max": lags[-1], "mean": sum(lags) / len(lags)}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            values[name] = lags[min(len(lags) - 1, int(q * len(lags)))]
        for name, value in values.items():
            yield GaugeMetricFamily(
                f"eventloop_lag_{name}_seconds",
                f"The {name} of the event loop's lag since the previous scrape.",
                value=value,
            )
        if cpu is not None and scraped is not None and cpu[0] > scraped[0]:
            yield GaugeMetricFamily(
                "eventloop_utilization",
                "Share of the time between the last two heartbeats seen by scrapes that the "
                "loop thread spent on CPU (0 to 1).",
                value=min(1.0, (cpu[1] - scraped[1]) / (cpu[0] - scraped[0])),
            )


class RequestHistogram(Collector):
    """The duration histogram of a transport's requests, in :data:`REQUEST_BUCKETS`: exposed as
    prometheus_client's ``Histogram`` exposes it, at a fraction of its cost per request.

    ``Histogram.observe`` takes two locks and walks the buckets in Python: under load, a
    measurable part of a light request. Here each thread counts into rows of its own, found by
    bisection: no lock, and no count lost to a race, since only that thread writes them. A
    scrape sums the rows of every thread, those that have ended included.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._bounds: list[str] = [*map(floatToGoString, REQUEST_BUCKETS), "+Inf"]
        self._local = threading.local()
        self._tables: list[dict[tuple[str, ...], list[float]]] = []  # one per thread
        self._adding = threading.Lock()  # when a thread observes for the first time
        self._exemplars: dict[tuple[tuple[str, ...], int], Exemplar] = {}
        REGISTRY.register(self)

    def observe(
        self, labels: tuple[str, ...], seconds: float, exemplar: dict[str, str] | None
    ) -> None:
        """One request of ``labels`` (values in the order of ``labelnames``) that took
        ``seconds``; ``exemplar``: the labels that link its bucket to its trace."""
        table: dict[tuple[str, ...], list[float]] | None = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = {}
            with self._adding:
                self._tables.append(table)
        row = table.get(labels)
        if row is None:
            row = table[labels] = [0.0] * (len(REQUEST_BUCKETS) + 2)  # the buckets, +Inf, sum
        bucket = bisect_left(REQUEST_BUCKETS, seconds)
        row[bucket] += 1
        row[-1] += seconds
        if exemplar is not None:
            self._exemplars[labels, bucket] = Exemplar(exemplar, seconds, time.time())

    def collect(self) -> Iterator[Metric]:
        with self._adding:
            tables = list(self._tables)
        summed: dict[tuple[str, ...], list[float]] = {}
        for table in tables:
            for labels, row in list(table.items()):  # a copy: its thread may add a row meanwhile
                into = summed.setdefault(labels, [0.0] * len(row))
                for i, value in enumerate(row):
                    into[i] += value
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit="seconds"
        )
        for labels, row in summed.items():
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            counts = accumulate(row[:-1])
            for i, (bound, count) in enumerate(zip(self._bounds, counts, strict=True)):
                exemplar = self._exemplars.get((labels, i))
                buckets.append((bound, count) if exemplar is None else (bound, count, exemplar))
            family.add_metric(list(labels), buckets, sum_value=row[-1])
        yield family


class SkippedCounter(Collector):
    """A counter of the events left out by the samples it made (:meth:`sample`): each
    :class:`~.logging.Sample` counts them in an attribute of its own, without a call or a lock
    per event, and a scrape sums the counts.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self._samples: list[Sample] = []
        REGISTRY.register(self)

    def sample(self, per_second: int, every: int) -> Sample:
        """A new :class:`~.logging.Sample` whose skipped events this counter reports."""
        made = Sample(per_second, every)
        self._samples.append(made)
        return made

    def collect(self) -> Iterator[Metric]:
        skipped = sum(sample.skipped for sample in list(self._samples))
        yield CounterMetricFamily(self.name, self.documentation, value=skipped)


LAG_WINDOW = LoopLagWindow()
REGISTRY.register(LAG_WINDOW)
SERVICE_READY = Gauge("service_ready", "1 while the service is ready for traffic, else 0.")


def trace_exemplar() -> dict[str, str] | None:
    """The ids of the current span as exemplar labels if its trace is sampled, else ``None``.

    Observed with a histogram sample, they link the sample's bucket to the trace of one request
    that landed there (only the OpenMetrics format shows them). An unsampled trace would lead
    nowhere, and with no trace at all this is one context lookup.
    """
    span = trace.get_current_span().get_span_context()
    if not (span.trace_flags.sampled and span.is_valid):
        return None
    return {
        "trace_id": trace.format_trace_id(span.trace_id),
        "span_id": trace.format_span_id(span.span_id),
    }


def request_exemplar() -> dict[str, str] | None:
    """:func:`trace_exemplar` for the request being handled: its span's ids, read from the
    ``traceparent`` bound with the request (``runtime.context.bind``) in one context lookup,
    where OpenTelemetry takes several. The transports use it for every request they measure.
    """
    traceparent = current_traceparent()  # "00-<trace id>-<span id>-<flags>"
    if traceparent is None or not int(traceparent[-2:], 16) & trace.TraceFlags.SAMPLED:
        return None
    return {"trace_id": traceparent[3:35], "span_id": traceparent[36:52]}


def start_metrics_server(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` from the default registry on a daemon thread.

    A scraper that accepts ``application/openmetrics-text`` gets that format, exemplars included;
    any other gets the Prometheus text format. Returns the server and its thread; call
    ``server.shutdown()`` to stop it.
    """
    return start_http_server(port, addr=host)
