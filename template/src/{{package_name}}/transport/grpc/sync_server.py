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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc

from ... import api
from ...resources import lifespan
from ...runtime import tracing
from ...runtime.lifecycle import Runtime, in_thread
from ...runtime.logging import configure_logging, get_logger
from ...runtime.settings import load_settings
from .admission import Admission
from .listening import listen, serve_metrics
from .reflection import enable_reflection
from .rpc import AccessLog
from .settings import GrpcSettings
from .sync_health import SyncHealth
from .sync_interceptors import RequestInterceptor, tracing_interceptor

T = TypeVar("T")

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
    admission = Admission(settings.max_concurrent_rpcs)
    handlers = AdmittedThreads(admission, settings.handler_threads)
    exporting = tracing.will_export()  # spans only if someone receives them
    server = grpc.server(
        handlers,
        interceptors=[
            *([tracing_interceptor()] if exporting else []),
            RequestInterceptor(
                admission,
                runtime.watchdog,
                continue_traces=not exporting,
                access_log=AccessLog.following(settings),
            ),
        ],
        options=settings.server_options(),
    )
    health = SyncHealth([])
    metrics: WSGIServer | None = None
    status = 0
    with contextlib.ExitStack() as resources:
        try:
            services = api.add_services(server, resources.enter_context(lifespan(settings)))
            health = SyncHealth(services)
            health.add_to(server)
            if settings.reflection:
                enable_reflection(server, services)
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


class AdmittedThreads(ThreadPoolExecutor):
    """The thread-pool server's handler threads: each job ends an admitted RPC's place.

    The interceptor takes the place when grpcio asks it for the handler; grpcio then always
    submits exactly one job here for that RPC, even when the client has gone away meanwhile,
    so the place is given back whatever happens to the call. Health checks and reflection run
    on threads of their own and are not counted.
    """

    def __init__(self, admission: Admission, threads: int) -> None:
        super().__init__(threads, thread_name_prefix="grpc-handler")
        self.admission = admission

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(self._then_leave, fn, *args, **kwargs)

    def _then_leave(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            self.admission.leave()
