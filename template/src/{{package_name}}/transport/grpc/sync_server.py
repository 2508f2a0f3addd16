"""``python -m <package>``: grpcio's thread-pool server, wired into the runtime.

The whole life of the process is :func:`main`, top to bottom:

    settings, logs -> metrics port -> gRPC port, health NOT_SERVING -> warm-up -> SERVING
    ... first SIGTERM/SIGINT -> health NOT_SERVING -> keep serving for the drain delay
    -> server.stop(grace): new RPCs refused, in-flight ones may finish -> offload pool down
    -> exit 0

Signals are plain ``signal.signal`` handlers on the main thread that only record the request
(the runtime's); the main thread does the rest. A second signal exits at once.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from ... import api
from ...runtime.lifecycle import Runtime
from ...runtime.logging import configure_logging, get_logger
from ...runtime.settings import load_settings
from .health import SyncHealth
from .listening import listen, serve_metrics
from .reflection import enable_reflection
from .settings import GrpcSettings
from .sync_interceptors import RequestInterceptor

log = get_logger(__name__)

# The main thread waits in slices: the kernel may deliver a second SIGTERM to any of the
# server's threads, and Python runs the handler only when the main thread wakes up.
AWAKE_EVERY = 0.2


def main() -> None:
    settings = load_settings(GrpcSettings)
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime(settings)
    runtime.install_signal_handlers()
    metrics = serve_metrics(settings.host, settings.metrics_port)
    handlers = ThreadPoolExecutor(settings.handler_threads, thread_name_prefix="grpc-handler")
    server = grpc.server(
        handlers,
        interceptors=[RequestInterceptor(runtime.watchdog)],
        options=settings.server_options(),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    services = api.add_services(server)
    health = SyncHealth(services)
    health.add_to(server)
    if settings.reflection:
        enable_reflection(server, services)
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
    offload_capacity = settings.offload_workers + settings.offload_queue
    if settings.handler_threads <= offload_capacity:
        log.warning(
            "handler_threads_too_few",
            handler_threads=settings.handler_threads,
            offload_capacity=offload_capacity,
            consequence="RPCs waiting for the offload pool can hold every handler thread, "
            "and light RPCs then wait behind them",
        )

    runtime.start()  # warm-up: stall watchdog, offload workers; SERVING once they answer
    if not runtime.wait_for_shutdown(timeout=0):  # a signal during warm-up skips SERVING
        health.serving()
        runtime.wait_for_shutdown()

    health.shutting_down()
    log.info("draining", drain_delay=settings.drain_delay)
    _sleep(settings.drain_delay)  # load balancers see NOT_SERVING and stop sending

    deadline = time.monotonic() + settings.shutdown_grace
    log.info("grpc_server_stopping", grace=settings.shutdown_grace)
    health.end_watches()  # they have reported NOT_SERVING; open, they would hold stop()
    _wait(server.stop(settings.shutdown_grace))
    log.info("grpc_server_stopped")
    runtime.shutdown(_remaining(deadline))
    if metrics is not None:
        metrics.shutdown()
    if not _handlers_finished(handlers, _remaining(deadline)):
        # stop(grace) cancels the RPCs that outlive the grace, but cannot stop the threads
        # running their handlers; waiting for them would outlast the orchestrator's patience.
        log.error("shutdown_incomplete", reason="RPC handlers still running after the grace")
        os._exit(1)


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, AWAKE_EVERY))


def _wait(event: threading.Event) -> None:
    while not event.wait(AWAKE_EVERY):
        pass


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _handlers_finished(handlers: ThreadPoolExecutor, timeout: float) -> bool:
    """Shut the handler pool down; ``False`` if a handler is still running after ``timeout``."""
    waiter = threading.Thread(target=handlers.shutdown, name="grpc-handler-shutdown", daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()
