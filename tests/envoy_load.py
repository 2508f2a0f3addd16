"""Continuous mixed load through a proxy, for the rolling-restart test (tests/test_envoy.py).

Run with the rendered project's environment and ``PYTHONPATH=src`` (the gRPC stubs):

    python envoy_load.py TRANSPORT PACKAGE ADDRESS STOP_FILE REPORT_FILE [LIGHT OFFLOADED]

LIGHT and OFFLOADED threads (default: 2 each) each send one kind of call in a loop, light
(ping) or offloaded (validation), until
STOP_FILE exists, it has sent MAX_CALLS, or MAX_SECONDS have passed. Every call is counted as
ok or failed; the report (JSON) gives the counts per kind and the first failures. A progress
line goes to stdout after each hundred calls.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

MAX_CALLS = 200_000  # the time bound (MAX_SECONDS) is what ends a long test
MAX_SECONDS = 180.0
DOCUMENT = {"name": "Ada", "email": "ada@example.com", "notes": ["nothing to report"] * 50}


def http_calls(address: str) -> dict[str, Callable[[], None]]:
    def light() -> None:
        with urllib.request.urlopen(f"http://{address}/v1/ping", timeout=10) as response:
            if json.load(response) != {"message": "pong"}:
                raise AssertionError("unexpected answer to /v1/ping")

    def offloaded() -> None:
        request = urllib.request.Request(
            f"http://{address}/v1/documents:validate",
            data=json.dumps(DOCUMENT).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if json.load(response)["valid"] is not True:
                raise AssertionError("the document was reported invalid")

    return {"light": light, "offloaded": offloaded}


def grpc_calls(package: str, address: str) -> dict[str, Callable[[], None]]:
    import grpc

    messages = importlib.import_module(f"{package}.v1.documents_pb2")
    services = importlib.import_module(f"{package}.v1.documents_pb2_grpc")
    local = threading.local()

    def stub() -> object:
        if not hasattr(local, "stub"):
            local.stub = services.DocumentServiceStub(grpc.insecure_channel(address))
        return local.stub

    def light() -> None:
        stub().Ping(messages.PingRequest(), timeout=10)  # type: ignore[attr-defined]

    def offloaded() -> None:
        request = messages.ValidateRequest(document_json=json.dumps(DOCUMENT))
        if not stub().Validate(request, timeout=10).valid:  # type: ignore[attr-defined]
            raise AssertionError("the document was reported invalid")

    return {"light": light, "offloaded": offloaded}


def describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}: {error.read()[:200]!r}"
    code = getattr(error, "code", None)
    if callable(code):  # a grpc.RpcError
        return f"{code()}: {error.details()}"  # type: ignore[attr-defined]
    return f"{type(error).__name__}: {error}"


def main(
    transport: str,
    package: str,
    address: str,
    stop_file: str,
    report_file: str,
    light: str = "2",
    offloaded: str = "2",
) -> int:
    calls = http_calls(address) if transport == "fastapi" else grpc_calls(package, address)
    stop, deadline = Path(stop_file), time.monotonic() + MAX_SECONDS
    lock = threading.Lock()
    counts = {kind: {"ok": 0, "failed": 0} for kind in calls}
    failures: list[str] = []
    sent = [0]

    def loop(kind: str) -> None:
        while not stop.exists() and time.monotonic() < deadline:
            with lock:
                if sent[0] >= MAX_CALLS:
                    return
                sent[0] += 1
                if sent[0] % 100 == 0:
                    print(f"sent {sent[0]}", flush=True)
            try:
                calls[kind]()
            except Exception as error:  # every failure is what the report is about
                with lock:
                    counts[kind]["failed"] += 1
                    if len(failures) < 20:
                        failures.append(f"{time.strftime('%H:%M:%S')} {kind}: {describe(error)}")
            else:
                with lock:
                    counts[kind]["ok"] += 1

    threads = [
        threading.Thread(target=loop, args=(kind,), daemon=True)
        for kind, number in {"light": int(light), "offloaded": int(offloaded)}.items()
        for _ in range(number)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Path(report_file).write_text(json.dumps({"counts": counts, "failures": failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
