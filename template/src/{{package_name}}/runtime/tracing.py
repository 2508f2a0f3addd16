"""OpenTelemetry tracing, set up from the standard ``OTEL_*`` environment variables.

The same variables ``opentelemetry-instrument`` reads configure it (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ...), with
one difference: nothing is exported unless an exporter or an OTLP endpoint is configured, so a
service started without them never tries to reach a collector on localhost. Without an exporter
neither the SDK nor the transports' instrumentations are installed (:func:`will_export`): spans
nobody records would still more than double a light request's CPU time. The transports then
continue an incoming ``traceparent`` themselves, so log lines and offloaded work keep its trace id.

The service process and each offload worker process call :func:`configure` once at start-up and
:func:`shutdown` last, which flushes the spans still waiting in the batch.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from opentelemetry import trace

# The SDK and the exporters are imported by the functions that use them: a service that
# exports nothing never loads them (about a third of a second of every start-up).
if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

HTTP_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
FLUSH_TIMEOUT_MS = 5000  # a flush gives up on the spans it waits for after this

DEFAULT_SERVICE_NAME = __name__.split(".", 1)[0].replace("_", "-")

_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value this service cannot use; the message says which."""


def _supported(variable: str, chosen: str, allowed: tuple[str, ...]) -> str:
    if chosen not in allowed:
        raise TracingConfigError(
            f"{variable}={chosen!r} is not supported; use one of {', '.join(allowed)}"
        )
    return chosen


def exporter_name(env: Mapping[str, str]) -> str:
    """Which exporter the environment asks for: ``otlp``, ``console`` or ``none``.

    ``OTEL_TRACES_EXPORTER`` decides when set; otherwise an OTLP endpoint means ``otlp`` and its
    absence ``none`` (the SDK's own default would be ``otlp`` to localhost).
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not chosen:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return "otlp" if any(env.get(name, "").strip() for name in endpoints) else "none"
    return _supported("OTEL_TRACES_EXPORTER", chosen, ("otlp", "console", "none"))


def will_export() -> bool:
    """Whether :func:`configure` will install an exporter, read from the environment alone.

    ``False`` for a value it cannot use: :func:`configure` stops the start-up with the message.
    """
    try:
        return exporter_name(os.environ) != "none"
    except TracingConfigError:
        return False


def protocol(env: Mapping[str, str]) -> str:
    """The OTLP protocol: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, ``..._PROTOCOL`` or HTTP."""
    chosen = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    return _supported("OTEL_EXPORTER_OTLP_PROTOCOL", chosen, ("http/protobuf", "grpc"))


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    name = exporter_name(env)
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    if protocol(env) == "grpc":
        try:  # installed with the gRPC transports only
            module = importlib.import_module(GRPC_EXPORTER)
        except ImportError:
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc, "
                "which is not installed; use http/protobuf or add the package"
            ) from None
    else:
        module = importlib.import_module(HTTP_EXPORTER)
    return cast("SpanExporter", module.OTLPSpanExporter())


def resource() -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``, plus this process's pid.

    The service is named after its package unless the environment names it.
    """
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    found = Resource.create({"process.pid": os.getpid()})
    if str(found.attributes.get("service.name", "")).startswith("unknown_service"):
        found = found.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return found


def configure() -> bool:
    """Install the SDK as the global tracer provider if an exporter is configured.

    ``True`` if spans will be exported. Once per process: later calls change nothing. The
    sampler comes from ``OTEL_TRACES_SAMPLER`` (and ``_ARG``), the batching from ``OTEL_BSP_*``.
    Raises :class:`TracingConfigError` for a value it cannot use.
    """
    global _provider  # noqa: PLW0603 - one provider per process, like the API's own global
    if _provider is not None:
        return True
    exporter = _exporter(os.environ)
    if exporter is None:
        return False
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=resource())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def flush() -> None:
    """Export the spans ended so far (an offload worker does this after each call)."""
    if _provider is not None:
        _provider.force_flush(FLUSH_TIMEOUT_MS)


def shutdown() -> None:
    """Flush what is left and stop exporting: the last step of a process's shutdown."""
    global _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
        _provider = None
