"""The bare gRPC references of the benchmark: grpcio's thread-pool server or grpc.aio.

Both serve the generated project's ``DocumentService`` stubs with the simplest correct fix:
``Validate`` hands the document's text to a one-worker ProcessPoolExecutor, where it is parsed
and checked by the project's own ``check_document``; ``Ping`` answers at once. The sync
server uses 32 handler threads, like the generated one. For the measurement only, the aio
server runs the generated service's loop heartbeat, and both serve ``/metrics`` on
METRICS_PORT once they accept calls.

    <project>/.venv/bin/python grpc_fix.py {sync,aio} PACKAGE PORT METRICS_PORT
"""

import asyncio
import importlib
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import grpc
from heartbeat import REGISTRY, heartbeat
from prometheus_client import start_http_server

flavour, package, port, metrics_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
documents = importlib.import_module(f"{package}.documents")
messages = importlib.import_module(f"{package}.v1.documents_pb2")
stubs = importlib.import_module(f"{package}.v1.documents_pb2_grpc")
pool = ProcessPoolExecutor(max_workers=1)


def response(problems):  # type: ignore[no-untyped-def]
    return messages.ValidateResponse(
        valid=not problems,
        problems=[messages.Problem(path=p.path, rule=p.rule, message=p.message) for p in problems],
    )


class SyncService(stubs.DocumentServiceServicer):  # type: ignore[misc]
    def Validate(self, request, context):  # type: ignore[no-untyped-def]
        try:
            problems = pool.submit(documents.check_document, request.document_json).result()
        except documents.InvalidDocument as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return response(problems)

    def Ping(self, request, context):  # type: ignore[no-untyped-def]
        return messages.PingResponse()


class AioService(stubs.DocumentServiceServicer):  # type: ignore[misc]
    async def Validate(self, request, context):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        try:
            problems = await loop.run_in_executor(
                pool, documents.check_document, request.document_json
            )
        except documents.InvalidDocument as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return response(problems)

    async def Ping(self, request, context):  # type: ignore[no-untyped-def]
        return messages.PingResponse()


def serve_sync() -> None:
    server = grpc.server(ThreadPoolExecutor(32))
    stubs.add_DocumentServiceServicer_to_server(SyncService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    start_http_server(metrics_port, addr="127.0.0.1", registry=REGISTRY)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


async def serve_aio() -> None:
    server = grpc.aio.server()
    stubs.add_DocumentServiceServicer_to_server(AioService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    beating = asyncio.create_task(heartbeat())
    start_http_server(metrics_port, addr="127.0.0.1", registry=REGISTRY)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(0)
    beating.cancel()


if __name__ == "__main__":
    pool.submit(int).result()  # the worker is up before the first call
    try:
        if flavour == "sync":
            serve_sync()
        else:
            asyncio.run(serve_aio())
    finally:
        pool.shutdown(cancel_futures=True)  # or its worker outlives the server
