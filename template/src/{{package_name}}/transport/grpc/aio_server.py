"""``python -m <package>``: the grpc.aio server on an asyncio event loop, wired into the runtime.

The whole life of the process is :func:`serve`, top to bottom, the same as the other servers':

    settings, logs -> warm-up starts -> resources open -> metrics port, gRPC port (health
    NOT_SERVING, liveness SERVING) -> warm-up done -> SERVING ... first SIGTERM/SIGINT
    -> NOT_SERVING -> keep serving for the drain delay -> stop(grace): new RPCs refused,
    in-flight ones may finish -> resources closed -> offload pool and watchdog stopped
    -> exit 0 (1 if start-up failed)

The runtime's signal handlers run between two bytecodes on the main thread, even while the
loop is blocked: a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from wsgiref.simple_server import WSGIServer

import grpc

from ... import api
from ...resources import lifespan
from ...runtime import tracing
from ...runtime.lifecycle import Runtime, in_thread
from ...runtime.logging import configure_logging, get_logger
from ...runtime.settings import load_settings
from .admission import Admission
from .aio_health import AioHealth
from .aio_interceptors import RequestInterceptor, tracing_interceptor
from .listening import listen, serve_metrics
from .reflection import enable_reflection
from .rpc import AccessLog
from .settings import GrpcSettings

log = get_logger(__name__)


def main() -> None:
    settings = load_settings(GrpcSettings)
    configure_logging(settings.log_level, settings.log_format)
    raise SystemExit(asyncio.run(serve(settings)))


async def serve(settings: GrpcSettings) -> int:
    """Serve until a signal has drained the service; the exit status."""
    runtime = Runtime(settings, asyncio.get_running_loop())
    runtime.signals.install(runtime.loop)
    warm_up = asyncio.wrap_future(in_thread(runtime.start))
    exporting = tracing.will_export()  # spans only if someone receives them
    server = grpc.aio.server(
        interceptors=[
            *([tracing_interceptor()] if exporting else []),
            RequestInterceptor(
                Admission(settings.max_concurrent_rpcs),
                continue_traces=not exporting,
                access_log=AccessLog.following(settings),
            ),
        ],
        options=settings.server_options(),
    )
    health = AioHealth([])
    metrics: WSGIServer | None = None
    status = 0
    async with contextlib.AsyncExitStack() as resources:
        try:
            services = api.add_services(
                server, await resources.enter_async_context(lifespan(settings))
            )
            health = AioHealth(services)
            health.add_to(server)
            if settings.reflection:
                enable_reflection(server, services)
            metrics = serve_metrics(settings.host, settings.metrics_port)
            target = listen(server, settings.host, settings.port)
            await health.not_serving()
            await server.start()
            log.info(
                "grpc_server_started",
                address=target,
                services=services,
                reflection=settings.reflection,
                metrics_port=settings.metrics_port or None,
            )
            await warm_up  # off the loop: health checks keep being answered meanwhile
        except Exception as error:
            status = runtime.startup_failed(error)
        else:
            served = runtime.ready()
            if served:
                await health.serving()
            await asyncio.wrap_future(in_thread(runtime.wait_for_shutdown))
            await health.shutting_down()
            if served:  # load balancers see NOT_SERVING and stop sending
                log.info("draining", drain_delay=settings.drain_delay)
                await asyncio.sleep(settings.drain_delay)
        log.info("grpc_server_stopping", grace=settings.shutdown_grace)
        health.end_watches()  # they have reported NOT_SERVING; open, they would hold stop()
        await server.stop(settings.shutdown_grace)
        log.info("grpc_server_stopped")
    if metrics is not None:
        await asyncio.wrap_future(in_thread(metrics.shutdown))  # blocks for up to 0.5 s
    await asyncio.gather(warm_up, return_exceptions=True)
    await asyncio.wrap_future(in_thread(runtime.stop))
    return status
