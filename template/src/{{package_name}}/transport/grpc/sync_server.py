"""``python -m <package>``: grpcio's thread-pool server, wired into the runtime.

The whole life of the process is :func:`serve`, top to bottom, the same as the other servers':

    settings, logs -> warm-up starts -> resources open -> metrics port, gRPC port (health
    NOT_SERVING, liveness SERVING) -> warm-up done -> SERVING ... first SIGTERM/SIGINT
    -> NOT_SERVING -> keep serving for the drain delay -> stop(grace): new RPCs refused,
    in-flight ones may finish -> resources closed -> offload pool and watchdog stopped
    -> exit 0 (1 if start-up failed)

The main thread does all of it; whenever it waits, it sleeps on the runtime's signal wakeup
socket, so a signal (a second one exits at once) is handled the moment it arrives.
"""

from __future__ import annotations

import contextlib
import os
from wsgiref.simple_server import WSGIServer

import grpc

from ... import api
from ...resources import lifespan
from ...runtime import tracing
from ...runtime.lifecycle import Runtime, in_thread
from ...runtime.logging import configure_logging, get_logger
from ...runtime.settings import load_settings
from .admission import Admission, AdmittedThreads
from .handlers import registering
from .listening import listen, serve_metrics
from .reflection import enable_reflection
from .rpc import AccessLog
from .settings import GrpcSettings
from .sync_handlers import SyncHandling, on_own_threads, tracing_interceptor
from .sync_health import SyncHealth

log = get_logger(__name__)


def main() -> None:
    settings = load_settings(GrpcSettings)
    configure_logging(settings.log_level, settings.log_format)
    raise SystemExit(serve(settings))


def serve(settings: GrpcSettings) -> int:
    """Serve until a signal has drained the service; the exit status."""
    runtime = Runtime(settings)
    runtime.signals.install()
    warm_up = in_thread(runtime.start)
    handlers = AdmittedThreads(Admission(settings.max_concurrent_rpcs), settings.handler_threads)
    exporting = tracing.will_export()  # spans only if someone receives them
    server = grpc.server(
        handlers,
        interceptors=[tracing_interceptor()] if exporting else None,
        options=settings.server_options(),
    )
    handling = SyncHandling(
        runtime.watchdog, continue_traces=not exporting, access_log=AccessLog.following(settings)
    )
    health = SyncHealth([])
    metrics: WSGIServer | None = None
    status = 0
    with contextlib.ExitStack() as resources:
        try:
            services = api.add_services(
                registering(server, handling.wrap), resources.enter_context(lifespan(settings))
            )
            health = SyncHealth(services)
            health.add_to(server)
            if settings.reflection:  # on threads of its own, like health checks
                enable_reflection(registering(server, on_own_threads("grpc-reflection")), services)
            metrics = serve_metrics(settings.host, settings.metrics_port)
            target = listen(server, settings.host, settings.port)
            server.start()
            log.info(
                "grpc_server_started",
                address=target,
                services=services,
                reflection=settings.reflection,
                metrics_port=settings.metrics_port or None,
                handler_threads=settings.handler_threads,
            )
            _check_handler_threads(settings)
            runtime.signals.wait(warm_up)
            warm_up.result()
        except Exception as error:
            status = runtime.startup_failed(error)
        else:
            served = runtime.ready()
            if served:
                health.serving()
            runtime.wait_for_shutdown()
            health.shutting_down()
            if served:  # load balancers see NOT_SERVING and stop sending
                log.info("draining", drain_delay=settings.drain_delay)
                runtime.sleep(settings.drain_delay)
        log.info("grpc_server_stopping", grace=settings.shutdown_grace)
        health.end_watches()  # they have reported NOT_SERVING; open, they would hold stop()
        runtime.signals.wait(server.stop(settings.shutdown_grace))
        log.info("grpc_server_stopped")
        # stop(grace) cancels the RPCs that outlive the grace, but cannot stop the threads
        # running their handlers; waiting for them would outlast the orchestrator's patience.
        handlers_done = runtime.signals.wait(in_thread(handlers.shutdown), runtime.grace_left())
    if metrics is not None:
        metrics.shutdown()
    runtime.signals.wait(warm_up)
    runtime.stop()
    if not handlers_done:
        log.error("shutdown_incomplete", reason="RPC handlers still running after the grace")
        os._exit(1)
    return status


def _check_handler_threads(settings: GrpcSettings) -> None:
    offload_capacity = settings.offload_workers + settings.offload_queue
    if settings.handler_threads <= offload_capacity:
        log.warning(
            "handler_threads_too_few",
            handler_threads=settings.handler_threads,
            offload_capacity=offload_capacity,
            consequence="RPCs waiting for the offload pool can hold every handler thread, "
            "and light RPCs then wait behind them",
        )
