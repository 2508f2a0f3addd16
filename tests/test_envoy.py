"""The shipped Envoy, running: the real binary with the generated envoy.yaml (moved to loopback,
nothing else changed) in front of real service processes.

- The edge: a 64 MiB request header, too many headers, and 300 slowloris connections are cut off
  by Envoy (431, 431, 408). The service never sees them: it keeps answering and its memory stays
  where it was.
- Retries: a rolling restart of two replicas (SIGTERM, drain, exit, start again; then the other)
  under continuous mixed load ends with zero failed requests, for every transport.
- A replica that sheds its load (503 with Retry-After, RESOURCE_EXHAUSTED) costs the client
  nothing while another replica has room: Envoy retries the request there.
"""

from __future__ import annotations

import copy
import json
import selectors
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from combinations import Combination, default
from support import run, tool_env
from test_deployment import (
    answers_of,
    by_deployment,
    free_port,
    loopback_envoy_config,
    process,
    request_through,
    tool,
    wait_until,
    walk,
)

TESTS = Path(__file__).parent
FRONTED = [c for c in by_deployment("kubernetes") if c["executor"] == default("executor")]
MIB = 1024 * 1024


# --- Envoy in front of N replicas on loopback ----------------------------------------------------


def envoy_config(project: Path, ports: dict[str, int], replica_ports: list[int]) -> dict[str, Any]:
    """The generated envoy.yaml on loopback, its service cluster listing every replica."""
    config = yaml.safe_load((project / "deploy/kubernetes/envoy.yaml").read_text())
    local = loopback_envoy_config(config, {**ports, "service": replica_ports[0]})
    (cluster,) = [c for c in local["static_resources"]["clusters"] if c.get("health_checks")]
    (group,) = cluster["load_assignment"]["endpoints"]
    (template,) = group["lb_endpoints"]
    group["lb_endpoints"] = []
    for port in replica_ports:
        endpoint = copy.deepcopy(template)
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
        group["lb_endpoints"].append(endpoint)
    return local


def admin_get(admin_port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=5) as response:
        return str(response.read().decode())


@dataclass
class Front:
    """Envoy on loopback in front of replicas of the service, each of which can be restarted."""

    project: Path
    venv: Path
    workdir: Path
    env: dict[str, str]
    stack: ExitStack
    ports: dict[str, int] = field(default_factory=dict)
    replica_ports: list[int] = field(default_factory=list)
    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    replica_logs: dict[int, Path] = field(default_factory=dict)

    @property
    def answers(self) -> dict[str, Any]:
        return answers_of(self.project)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['ingress']}"

    @property
    def grpc(self) -> bool:
        return str(self.answers["transport"]).startswith("grpc")

    @property
    def cluster(self) -> str:
        return str(self.answers["project_slug"])

    def start(self, index: int, **settings: str) -> None:
        prefix = self.answers["package_name"].upper() + "_"
        env = {
            **self.env,
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(self.replica_ports[index]),
            **({f"{prefix}METRICS_PORT": str(free_port())} if self.grpc else {}),
            f"{prefix}OFFLOAD_WORKERS": "1",
            **{prefix + name.upper(): value for name, value in settings.items()},
        }
        log = self.workdir / f"replica-{index}.{len(self.logs)}.log"
        self.logs.append(log)
        self.replica_logs[index] = log
        command = [str(self.venv / "bin" / "python"), "-m", self.answers["package_name"]]
        child = self.stack.enter_context(process(command, log, cwd=self.project, env=env))
        self.replicas[index] = child

    def health(self) -> dict[int, str]:
        """Each replica port's health flags in Envoy ('' until Envoy has checked it)."""
        try:
            text = admin_get(self.ports["admin"], "/clusters")
        except OSError:
            return {}
        found = {}
        for line in text.splitlines():
            parts = line.split("::")
            if parts[0] == self.cluster and len(parts) == 4 and parts[2] == "health_flags":
                found[int(parts[1].rsplit(":", 1)[1])] = parts[3]
        return found

    def wait_healthy(self, index: int) -> None:
        port = self.replica_ports[index]
        wait_until(
            lambda: self.health().get(port) == "healthy", f"replica {index} healthy", self.logs
        )

    def wait_in_rotation(self) -> None:
        """Send calls through Envoy until every replica has answered one. Envoy's admin API
        reports a replica healthy before its worker thread routes to it (up to a health-check
        interval later); a load started in between finds a single replica."""

        def all_served() -> bool:
            request_through(self.address, self.project, self.answers, self.env)
            return all(served_by(self, index) > 0 for index in range(len(self.replicas)))

        wait_until(all_served, "every replica in rotation", self.logs)

    def stats(self) -> dict[str, int]:
        counters = {}
        for line in admin_get(self.ports["admin"], "/stats").splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                counters[name] = int(value)
        return counters


@contextmanager
def front(
    project: Path,
    venv: Path,
    cache: Path,
    workdir: Path,
    replicas: list[dict[str, str]],
    change: Callable[[dict[str, Any]], None] = lambda config: None,
) -> Iterator[Front]:
    """Envoy and healthy service processes, one per item of ``replicas`` (its settings), all on
    loopback. ``change`` may alter the config, for negative controls."""
    with ExitStack() as stack:
        env = tool_env(venv, mypy_cache=cache)
        proxy = Front(project, venv, workdir, env, stack)
        proxy.ports = {name: free_port() for name in ("admin", "ingress", "ops")}
        proxy.replica_ports = [free_port() for _ in replicas]
        proxy.replicas = [None] * len(replicas)  # type: ignore[list-item]
        config = envoy_config(project, proxy.ports, proxy.replica_ports)
        change(config)
        (workdir / "envoy.yaml").write_text(yaml.safe_dump(config))
        for index, settings in enumerate(replicas):
            proxy.start(index, **settings)
        log = workdir / "envoy.log"
        proxy.logs.append(log)
        envoy = [tool("envoy"), "-c", "envoy.yaml", "--disable-hot-restart", "--concurrency", "1"]
        stack.enter_context(process(envoy, log, cwd=workdir))
        for index in range(len(replicas)):
            proxy.wait_healthy(index)
        proxy.wait_in_rotation()
        yield proxy


Launch = Callable[..., AbstractContextManager[Front]]


@pytest.fixture
def launch(
    prepared: Callable[[Combination], Path], shared_venv: Path, worker_cache: Path, tmp_path: Path
) -> Launch:
    """``launch(combination, replicas, change)``: :func:`front` for a prepared combination."""

    def start(
        combination: Combination,
        replicas: list[dict[str, str]],
        change: Callable[[dict[str, Any]], None] = lambda config: None,
    ) -> AbstractContextManager[Front]:
        return front(prepared(combination), shared_venv, worker_cache, tmp_path, replicas, change)

    return start


# --- The edge: oversized headers and slow senders never reach the service -----------------------


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def answer_to(address: str, head: bytes, body_of_header: int = 0) -> bytes:
    """Send ``head`` (and then ``body_of_header`` bytes continuing its last header) and return
    what the server answered. Sending stops when the server closes the connection; the answer
    is read all along by another thread, so it is not lost to the reset that follows."""
    host, port = address.rsplit(":", 1)
    answer = bytearray()
    with socket.create_connection((host, int(port)), timeout=30) as connection:

        def read() -> None:
            try:
                while chunk := connection.recv(65536):
                    answer.extend(chunk)
            except OSError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            connection.sendall(head)
            block = b"a" * MIB
            for _ in range(body_of_header // MIB):
                connection.sendall(block)
            connection.sendall(b"\r\n\r\n")
        except OSError:
            pass  # closed by Envoy while the header was still coming: what a limit does
        reader.join(timeout=30)
    return bytes(answer)


def slowloris(address: str, connections: int, deadline: float) -> list[bytes]:
    """``connections`` clients that send their headers one byte at a time and never finish.
    Returns what each got back once the server closed it; fails if one is still open at the
    deadline."""
    host, port = address.rsplit(":", 1)
    stream = b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\n" + b"X-Slow: still coming\r\n" * 10_000
    selector = selectors.DefaultSelector()
    sent: dict[socket.socket, int] = {}
    answers: dict[socket.socket, bytearray] = {}
    for _ in range(connections):
        client = socket.create_connection((host, int(port)), timeout=5)
        client.setblocking(False)
        selector.register(client, selectors.EVENT_READ)
        sent[client], answers[client] = 0, bytearray()
    closed: list[bytes] = []
    give_up = time.monotonic() + deadline
    try:
        while sent and time.monotonic() < give_up:
            for client in list(sent):
                try:
                    client.send(stream[sent[client] : sent[client] + 1])
                    sent[client] += 1
                except OSError:
                    pass  # closed: the read below collects it
            # The pause between two bytes, during which Envoy's answers are read.
            for key, _ in selector.select(timeout=0.2):
                client = key.fileobj
                assert isinstance(client, socket.socket)
                try:
                    chunk = client.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    answers[client].extend(chunk)
                    continue
                selector.unregister(client)
                client.close()
                closed.append(bytes(answers[client]))
                del sent[client]
        assert not sent, f"{len(sent)} slow connections still open after {deadline} s"
    finally:
        for client in sent:
            client.close()
        selector.close()
    return closed


@contextmanager
def calling_meanwhile(call: Callable[[], None]) -> Iterator[list[str]]:
    """Call ``call`` over and over in a thread while the block runs; yields its failures."""
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                call()
            except Exception as error:  # each failure is reported by the test
                failures.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=30)


# A gRPC call with SIZE bytes of metadata; prints the status it ended with.
METADATA_CALL = """
import importlib, sys, grpc
package, address, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
messages = importlib.import_module(f"{package}.v1.documents_pb2")
stub = importlib.import_module(f"{package}.v1.documents_pb2_grpc").DocumentServiceStub(
    grpc.insecure_channel(address)
)
try:
    stub.Ping(messages.PingRequest(), timeout=10, metadata=[("x-huge", "a" * size)])
    print("OK")
except grpc.RpcError as error:
    print(error.details(), error.code().name)
"""


@pytest.mark.matrix
@pytest.mark.parametrize("combination", FRONTED, ids=str)
def test_envoy_cuts_off_oversized_headers_and_slow_senders(
    combination: Combination, launch: Launch
) -> None:
    """A 64 MiB header and a request with 200 headers get 431 from Envoy (a gRPC call with
    64 KiB of metadata has its stream reset); 300 connections that send their headers byte by
    byte get 408 once Envoy's header timeout passes. Meanwhile the service answers every call,
    receives none of these requests, and its memory stays flat."""
    with launch(combination, [{}]) as proxy:
        project = proxy.project
        answers, env = proxy.answers, proxy.env
        upstream = f"cluster.{proxy.cluster}.upstream_rq_total"

        def call() -> None:
            request_through(proxy.address, project, answers, env)

        call()
        memory_before = resident_mib(proxy.replicas[0].pid)
        requests_before = proxy.stats()[upstream]

        huge = answer_to(
            proxy.address, b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\nX-Huge: ", 64 * MIB
        )
        assert huge.startswith(b"HTTP/1.1 431"), huge[:200]
        many = b"".join(f"X-Header-{n}: {n}\r\n".encode() for n in range(200))
        crowded = answer_to(proxy.address, b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\n" + many)
        assert crowded.startswith(b"HTTP/1.1 431"), crowded[:200]
        if answers["transport"] != "fastapi":
            python = proxy.venv / "bin" / "python"
            call_with_metadata = [python, "-c", METADATA_CALL, answers["package_name"]]
            result = run([*call_with_metadata, proxy.address, str(64 * 1024)], cwd=project, env=env)
            assert result.stdout.split()[-1] in {"INTERNAL", "UNAVAILABLE"}, result.stdout
        assert proxy.stats()[upstream] == requests_before, "an oversized request reached it"

        with calling_meanwhile(call) as failures:
            closed = slowloris(proxy.address, connections=300, deadline=90)
        assert not failures, "the service stopped answering during the attack:\n" + "\n".join(
            failures[:10]
        )
        assert len(closed) == 300
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in closed), {
            answer[:40] for answer in closed
        }
        assert proxy.stats()["http.ingress.downstream_rq_header_timeout"] >= 300
        memory_after = resident_mib(proxy.replicas[0].pid)
        assert memory_after - memory_before < 16, (
            f"the service grew from {memory_before:.0f} to {memory_after:.0f} MiB"
        )
        call()


# --- Retries: a rolling restart and a shedding replica cost the clients nothing ------------------


@contextmanager
def mixed_load(
    proxy: Front, light: int = 2, offloaded: int = 2
) -> Iterator[Callable[[], dict[str, Any]]]:
    """tests/envoy_load.py running against the proxy: ``light`` and ``offloaded`` threads of
    calls, bounded in count and time. Yields a function that stops it and returns its report."""
    stop, report = proxy.workdir / "load.stop", proxy.workdir / "load.json"
    log = proxy.workdir / "load.log"
    proxy.logs.append(log)
    command = [
        str(proxy.venv / "bin" / "python"),
        str(TESTS / "envoy_load.py"),
        proxy.answers["transport"],
        proxy.answers["package_name"],
        proxy.address,
        str(stop),
        str(report),
        str(light),
        str(offloaded),
    ]
    with process(command, log, cwd=proxy.project, env=proxy.env) as load:

        def finish() -> dict[str, Any]:
            stop.touch()
            assert load.wait(timeout=60) == 0, log.read_text()
            result: dict[str, Any] = json.loads(report.read_text())
            return result

        wait_until(lambda: "sent 100" in log.read_text(), "the load to get going", proxy.logs)
        yield finish


def served_by(proxy: Front, index: int) -> int:
    """Requests Envoy has had answered by replica ``index`` (successes, health checks aside)."""
    port = proxy.replica_ports[index]
    for line in admin_get(proxy.ports["admin"], "/clusters").splitlines():
        if line.startswith(f"{proxy.cluster}::127.0.0.1:{port}::rq_success::"):
            return int(line.rsplit("::", 1)[1])
    return 0


def restart(proxy: Front, index: int) -> None:
    """SIGTERM replica ``index``, let it drain and exit, start it again, and wait until it is
    back in rotation and serving."""
    proxy.replicas[index].send_signal(signal.SIGTERM)
    assert proxy.replicas[index].wait(timeout=120) == 0, proxy.replica_logs[index].read_text()
    proxy.start(index)
    # Envoy may still call the old process at this port healthy: first the new one's own word.
    wait_until(
        lambda: '"service_ready"' in proxy.replica_logs[index].read_text(),
        f"replica {index} to start again",
        proxy.logs,
        timeout=120,
    )
    proxy.wait_healthy(index)
    served = served_by(proxy, index)
    wait_until(
        lambda: served_by(proxy, index) > served + 20,
        f"replica {index} to serve again",
        proxy.logs,
    )


@pytest.mark.matrix
@pytest.mark.parametrize("combination", FRONTED, ids=str)
def test_rolling_restart_under_load_fails_no_request(
    combination: Combination, launch: Launch
) -> None:
    """Two replicas behind the shipped Envoy, under continuous light and offloaded calls: one is
    SIGTERMed, drains, exits and is started again, then the other. No call fails."""
    with launch(combination, [{}, {}]) as proxy, mixed_load(proxy) as finish:
        for index in range(2):
            restart(proxy, index)
        report = finish()
    counts = report["counts"]
    assert all(kind["ok"] > 0 for kind in counts.values()), counts
    failed = sum(kind["failed"] for kind in counts.values())
    assert failed == 0, f"{failed} calls failed during the rolling restart: {counts}\n" + "\n".join(
        report["failures"]
    )


def without_retries(config: dict[str, Any]) -> None:
    for node in walk(config):
        node.pop("retry_policy", None)


def shed_and_retried(
    launch: Launch, combination: Combination, change: Callable[[dict[str, Any]], None]
) -> tuple[dict[str, Any], int]:
    """Offloaded calls, three at a time, through Envoy to two replicas: one with no queue in
    front of its single worker (it sheds a call whenever it has one running), one with room.
    Returns the load's report and the number of retries Envoy made."""
    tiny = {"offload_queue": "0"}
    with launch(combination, [tiny, {}], change) as proxy:
        retries = f"cluster.{proxy.cluster}.upstream_rq_retry"
        # Three callers at most: Envoy's retry budget always lets three retries through at once
        # (min_retry_concurrency), so every shed call can be retried.
        with mixed_load(proxy, light=0, offloaded=3) as finish:
            wait_until(
                lambda: "sent 1000" in (proxy.workdir / "load.log").read_text(),
                "1000 calls",
                proxy.logs,
            )
            report = finish()
        return report, proxy.stats().get(retries, 0)


@pytest.mark.matrix
@pytest.mark.parametrize("combination", FRONTED, ids=str)
def test_a_shed_call_is_retried_on_another_replica(
    combination: Combination, launch: Launch
) -> None:
    """A replica whose offload pool is full turns calls away (503 with Retry-After, or
    RESOURCE_EXHAUSTED); Envoy retries each once on the other replica, and no call fails."""
    report, retries = shed_and_retried(launch, combination, lambda config: None)
    failed = report["counts"]["offloaded"]["failed"]
    assert failed == 0, f"{failed} shed calls reached the client:\n" + "\n".join(report["failures"])
    assert retries > 0, "no call was shed: the test did not load the small replica enough"


def test_shed_calls_fail_without_the_retry_policy(launch: Launch) -> None:
    """Negative control: the same load, with envoy.yaml's retry policies removed, lets shed
    calls through to the client."""
    report, retries = shed_and_retried(launch, FRONTED[0], without_retries)
    assert retries == 0
    assert report["counts"]["offloaded"]["failed"] > 0, report
