"""``python -m <package>``: the grpc.aio server on an asyncio event loop, wired into the runtime.

The whole life of the process is :func:`serve`, top to bottom:

    settings, logs -> metrics port -> gRPC port, health NOT_SERVING -> warm-up -> SERVING
    ... first SIGTERM/SIGINT -> health NOT_SERVING -> keep serving for the drain delay
    -> await server.stop(grace): new RPCs refused, in-flight ones may finish
    -> offload pool down -> exit 0

Signals are handled on the loop (``loop.add_signal_handler``): catching KeyboardInterrupt
instead breaks grpc.aio's shutdown. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from ... import api
from ...runtime.lifecycle import Runtime, run_in_thread
from ...runtime.logging import configure_logging, get_logger
from ...runtime.settings import load_settings
from .aio_interceptors import RequestInterceptor
from .health import AioHealth
from .listening import listen, serve_metrics
from .reflection import enable_reflection
from .settings import GrpcSettings

log = get_logger(__name__)


def main() -> None:
    settings = load_settings(GrpcSettings)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


async def serve(settings: GrpcSettings) -> None:
    runtime = Runtime(settings)
    runtime.install_signal_handlers(asyncio.get_running_loop())
    metrics = serve_metrics(settings.host, settings.metrics_port)
    server = grpc.aio.server(
        interceptors=[RequestInterceptor()],
        options=settings.server_options(),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    services = api.add_services(server)
    health = AioHealth(services)
    health.add_to(server)
    if settings.reflection:
        enable_reflection(server, services)
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

    await runtime.start_async()  # warm-up off the loop: health checks keep being answered
    if runtime.lifecycle.ready:  # not if a signal arrived during warm-up
        await health.serving()
    await runtime.wait_for_shutdown_async()

    await health.shutting_down()
    log.info("draining", drain_delay=settings.drain_delay)
    await asyncio.sleep(settings.drain_delay)  # load balancers see NOT_SERVING and stop sending

    deadline = time.monotonic() + settings.shutdown_grace
    log.info("grpc_server_stopping", grace=settings.shutdown_grace)
    health.end_watches()  # they have reported NOT_SERVING; open, they would hold stop()
    await server.stop(settings.shutdown_grace)
    log.info("grpc_server_stopped")
    await runtime.shutdown_async(max(0.1, deadline - time.monotonic()))
    if metrics is not None:
        await run_in_thread(metrics.shutdown)  # it blocks for up to half a second
