"""The two ports a gRPC service opens: the gRPC port, and a small HTTP port for /metrics.

Either one being taken (or the host not being an address of this machine) fails the start
(:class:`StartupError`): one clear log line and exit status 1, not a traceback.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

import grpc

from ...runtime.lifecycle import StartupError
from ...runtime.metrics import start_metrics_server


def address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets as gRPC expects."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(server: grpc.Server | grpc.aio.Server, host: str, port: int) -> str:
    """Bind the gRPC port (plaintext: TLS ends at the proxy or mesh in front)."""
    target = address(host, port)
    try:
        server.add_insecure_port(target)
    except RuntimeError:
        raise StartupError(f"cannot listen on {target} (in use or not local)") from None
    return target


def serve_metrics(host: str, port: int) -> WSGIServer | None:
    """Serve Prometheus ``/metrics`` on ``port`` (0: not at all) from a daemon thread."""
    if port == 0:
        return None
    try:
        server, _thread = start_metrics_server(host, port)
    except OSError as error:
        target = address(host, port)
        raise StartupError(f"cannot serve metrics on {target}: {error.strerror}") from None
    return server
