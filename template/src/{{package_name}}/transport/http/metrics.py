"""The HTTP request metric, named and labelled after OpenTelemetry's semantic conventions.

``http.server.request.duration`` is spelled as OpenTelemetry's Prometheus exporter spells it:
``http_server_request_duration_seconds``, with the labels ``http_request_method``,
``http_route``, ``http_response_status_code``, ``url_scheme`` and ``error_type`` (the status
code of a 5xx response, empty otherwise). A request that matched no route has an empty
``http_route``: the raw path would make the label set unbounded.
"""

from __future__ import annotations

import os

from ...runtime.metrics import RequestHistogram, SkippedCounter, request_exemplar

REQUEST_DURATION = RequestHistogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests.",
    ("http_request_method", "http_route", "http_response_status_code", "url_scheme", "error_type"),
)

ACCESS_LOG_SKIPPED = SkippedCounter(
    "http_server_access_log_skipped",
    "Fast successful requests left out of the access log (beyond ACCESS_LOG_PER_SECOND).",
)

# RFC 9110's methods, PATCH and QUERY; any other is counted as "_OTHER", so a client cannot
# add label values at will. OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS replaces the list.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
KNOWN_METHODS_VARIABLE = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"


def known_methods() -> frozenset[str]:
    """The methods counted by name: the environment's list if it gives one, else the default."""
    listed = os.environ.get(KNOWN_METHODS_VARIABLE)
    if listed is None:
        return KNOWN_METHODS
    return frozenset(name.strip() for name in listed.split(",") if name.strip())


class RequestDurations:
    """Observes request durations; each request's label values are made once, then reused."""

    def __init__(self) -> None:
        self.methods = known_methods()
        self._labels: dict[tuple[str, str, int, str], tuple[str, ...]] = {}

    def observe(self, method: str, route: str, status: int, scheme: str, seconds: float) -> None:
        """One request's duration; ``route`` is its route template ("" if none matched).

        With a sampled trace, the request's trace and span ids go with it as an exemplar.
        """
        if method not in self.methods:
            method = "_OTHER"
        key = (method, route, status, scheme)
        labels = self._labels.get(key)
        if labels is None:
            error_type = str(status) if status >= 500 else ""
            labels = self._labels[key] = (method, route, str(status), scheme, error_type)
        REQUEST_DURATION.observe(labels, seconds, request_exemplar())
