"""The article's fix, as a reader would write it: the bare reference of the HTTP benchmark.

FastAPI on uvicorn (uvloop, httptools, no access log), and the CPU-bound check handed to a
one-worker ProcessPoolExecutor with ``run_in_executor``; the body goes to the worker as bytes
and is parsed there. The check is the generated project's own ``check_document``, so both
services do the same work per request.

For the measurement only, it also runs the generated service's loop heartbeat (a timer every
100 ms, its lateness in ``eventloop_lag_seconds``) and serves it at ``/metrics``.

    <project>/.venv/bin/python http_fix.py PACKAGE PORT
"""

import asyncio
import dataclasses
import importlib
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from heartbeat import REGISTRY, heartbeat
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

documents = importlib.import_module(f"{sys.argv[1]}.documents")
pool = ProcessPoolExecutor(max_workers=1)


@asynccontextmanager
async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
    pool.submit(int).result()  # the worker is up before the first request
    task = asyncio.create_task(heartbeat())
    yield
    task.cancel()
    pool.shutdown()


app = FastAPI(lifespan=lifespan)


@app.get("/v1/ping")
async def ping() -> dict[str, str]:
    return {"message": "pong"}


@app.post("/v1/documents:validate")
async def validate(request: Request) -> Response:
    body = await request.body()
    loop = asyncio.get_running_loop()
    try:
        problems = await loop.run_in_executor(pool, documents.check_document, body)
    except documents.InvalidDocument as error:
        return JSONResponse({"detail": str(error)}, status_code=422)
    return JSONResponse(
        {"valid": not problems, "problems": [dataclasses.asdict(p) for p in problems]}
    )


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
