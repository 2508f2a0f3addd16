"""The Dockerfile and the deployment manifests, checked by the tools that will consume them.

Every combination is rendered (the matrix's ``rendered`` fixture) and its Dockerfile and its
deployment target's files go through the real validators:

- Dockerfile: hadolint.
- kubernetes: every manifest against the Kubernetes 1.30 strict schemas (kubernetes-validate),
  envoy.yaml with the real Envoy binary (``envoy --mode validate``), the kustomization with
  ``kubectl kustomize`` where kubectl exists.
- ecs_fargate: cfn-lint on the CloudFormation template; task-definition.json against the
  RegisterTaskDefinition input shape of botocore's ECS model.
- compose: ``docker compose config`` (scripts/compose-cli.sh finds or installs Compose).

On top of the schemas, the drain and termination budget and the production settings that no
schema knows about are checked (``*_problems`` functions: each returns what is wrong).

Each validator also gets a negative control: a rendered file with one deliberate mistake must
be rejected, so a validator that silently checks nothing fails the suite.

Two checks run the real thing: the generated envoy.yaml in front of the service on loopback
(Envoy must notice a draining pod before it stops), and the image built, run and stopped (exit
code 0 after SIGTERM) with podman, which scripts/container-runtime.sh installs where it can.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import jsonschema
import kubernetes_validate
import pytest
import yaml
from botocore.validate import ParamValidator
from combinations import REPO, Combination, combinations, default
from hygiene import load_yaml_documents
from support import CACHE, locked, once, render, run, tool_env

COMBINATIONS = combinations()
KUBERNETES_VERSION = "1.30.0"
FARGATE_MAX_STOP_TIMEOUT = 120


def by_deployment(target: str) -> list[Combination]:
    return [combination for combination in COMBINATIONS if combination["deployment"] == target]


def example(deployment: str, transport: str | None = None) -> Combination:
    """The combination with the default answers, but this deployment (and transport)."""
    wanted = {
        **{name: default(name) for name in COMBINATIONS[0].data},
        "deployment": deployment,
        **({"transport": transport} if transport else {}),
    }
    return next(c for c in COMBINATIONS if c.data == wanted)


# --- Tools ----------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A command from the tests' own environment (the repository's dev dependency group)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: run the tests with scripts/test (it installs the dev group)"
    return found


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    result = run(["bash", REPO / "scripts" / "compose-cli.sh"], timeout=300)
    return result.stdout.strip().splitlines()[-1].split()


@cache
def task_definition_shape() -> Any:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def botocore_problems(task_definition: dict[str, Any]) -> list[str]:
    report = ParamValidator().validate(task_definition, task_definition_shape())
    return report.generate_report().splitlines() if report.has_errors() else []


# A custom resource whose content is checked elsewhere: tests/test_stall_alerts.py runs promtool
# on the PrometheusRule's groups.
PROMTOOL_CHECKED_KINDS = frozenset({"PrometheusRule"})


def kubernetes_schema_problems(document: dict[str, Any]) -> list[str]:
    if document.get("kind") in PROMTOOL_CHECKED_KINDS:
        return []
    if document.get("apiVersion") in CUSTOM_RESOURCE_SCHEMAS:
        return custom_resource_problems(document)
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{document.get('kind')} {document['metadata'].get('name')}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{document.get('kind')}: no such kind in Kubernetes {KUBERNETES_VERSION}: {error}"]
    return []


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [tool("envoy"), "--mode", "validate", "-c", config.name], cwd=config.parent, check=False
    )


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("hadolint"), "--no-color", dockerfile], check=False)


def cfn_lint(template: Path) -> list[str]:
    """cfn-lint's findings, from its Python API: the CLI would pay its 5 s start-up per file."""
    from cfnlint.api import lint_file  # a slow import: only when an ECS test runs

    return [str(match) for match in lint_file(template)]


# --- Reading the rendered files -------------------------------------------------------------------


def answers_of(project: Path) -> dict[str, Any]:
    answers: dict[str, Any] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return answers


def seconds(value: str | int | float) -> float:
    """A duration as Envoy ("1.5s") or compose ("30s", "1m30s") writes it, or plain seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    assert parts and value, f"not a duration: {value!r}"
    return int(parts[1] or 0) * 60 + float(parts[2] or 0)


def walk(node: object) -> Iterator[dict[str, Any]]:
    """Every mapping in a parsed YAML/JSON tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def manifests(project: Path) -> dict[str, dict[str, Any]]:
    """The Kubernetes resources of deploy/kubernetes, by file name (kustomization left out)."""
    found = {}
    for path in sorted((project / "deploy" / "kubernetes").glob("*.yaml")):
        if path.name in {"kustomization.yaml", "envoy.yaml"}:
            continue
        (document,) = yaml.safe_load_all(path.read_text())
        found[path.name] = document
    return found


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    pairs = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def dockerfile_problems(text: str, answers: dict[str, Any]) -> list[str]:
    package, version = answers["package_name"], answers["python_version"]
    steps = dockerfile_instructions(text)
    args = {instruction: [a for i, a in steps if i == instruction] for instruction, _ in steps}
    problems = []
    if [a.split()[0] for a in args.get("FROM", [])] != [f"python:{version}-slim"] * 2:
        problems.append(f"not two stages FROM python:{version}-slim: {args.get('FROM')}")
    if not any("uv sync --frozen --no-dev" in a for a in args.get("RUN", [])):
        problems.append("the locked dependencies are not installed with uv sync --frozen --no-dev")
    if not any(re.search(r"pip install .*\buv==[\d.]+", a) for a in args.get("RUN", [])):
        problems.append("uv is not installed at a pinned version")
    user = args.get("USER", ["root"])[-1]
    if not re.fullmatch(r"[1-9]\d*(:\d+)?", user):
        problems.append(f"USER {user}: not a numeric, non-root user")
    python = "/app/.venv/bin/python"
    entrypoint = json.loads(args.get("ENTRYPOINT", ["null"])[-1])
    if entrypoint != [python, "-m", package]:
        problems.append(f"ENTRYPOINT is not the exec form of `{python} -m {package}`: {entrypoint}")
    healthcheck = args.get("HEALTHCHECK", [""])[-1]
    command = healthcheck[healthcheck.find("CMD ") + 4 :] if "CMD [" in healthcheck else "null"
    if json.loads(command) != [python, "-m", f"{package}.healthcheck"]:
        problems.append(
            f"HEALTHCHECK is not the exec form of the healthcheck module: {healthcheck}"
        )
    expected_ports = {str(answers["port"])}
    if answers["transport"] != "fastapi":
        expected_ports.add(str(answers["metrics_port"]))
    exposed = {port for a in args.get("EXPOSE", []) for port in a.split()}
    if exposed != expected_ports:
        problems.append(f"EXPOSE {sorted(exposed)}, expected {sorted(expected_ports)}")
    return problems


@pytest.mark.matrix
@pytest.mark.parametrize("combination", COMBINATIONS, ids=str)
def test_dockerfile(combination: Combination, rendered: Callable[[Combination], Path]) -> None:
    """hadolint finds nothing, and the image runs the service the way signals need."""
    project = rendered(combination)
    result = hadolint(project / "Dockerfile")
    assert result.returncode == 0, f"hadolint:\n{result.stdout}"
    problems = dockerfile_problems((project / "Dockerfile").read_text(), answers_of(project))
    assert not problems, "\n".join(problems)
    ignored = (project / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :].count("!uv.lock") == 1, "uv.lock must reach the build"


# --- Kubernetes -----------------------------------------------------------------------------------


def pod_problems(name: str, pod: dict[str, Any]) -> list[str]:
    """Restricted pod security, read-only root with a writable /tmp where the app needs it."""
    problems = []
    security = pod["spec"].get("securityContext", {})
    if security.get("runAsNonRoot") is not True or not security.get("runAsUser"):
        problems.append(f"{name}: the pod must set runAsNonRoot and a numeric runAsUser")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    if pod["spec"].get("enableServiceLinks") is not False:
        problems.append(f"{name}: service links would inject <SERVICE>_PORT=tcp://... variables")
    for container in pod["spec"]["containers"]:
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities are not all dropped")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root file system is writable")
        if not container.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"{name}: no memory limit")
        if not container.get("lifecycle", {}).get("preStop", {}).get("sleep"):
            problems.append(f"{name}: no preStop sleep")
    return problems


def service_deployment_problems(deployment: dict[str, Any], answers: dict[str, Any]) -> list[str]:
    """The service's own pods: probes per transport, /tmp, and the termination budget."""
    problems = pod_problems("deployment.yaml", deployment["spec"]["template"])
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if "emptyDir" not in volumes.get(mounts.get("/tmp", ""), {}):
        problems.append("no emptyDir at /tmp: the process pool's forkserver needs one")
    grpc = answers["transport"] != "fastapi"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container.get(probe, {})
        if grpc and spec.get("grpc", {}).get("port") != answers["port"]:
            problems.append(f"{probe} is not a native grpc probe on port {answers['port']}")
        if not grpc and not spec.get("httpGet"):
            problems.append(f"{probe} is not an HTTP probe")
    if not grpc:
        paths = {p: container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
        if paths != {"readinessProbe": "/readyz", "livenessProbe": "/livez"}:
            problems.append(f"HTTP probes on the wrong paths: {paths}")
    env, prefix = env_of(container), answers["package_name"].upper() + "_"
    drain, grace = float(env[f"{prefix}DRAIN_DELAY"]), float(env[f"{prefix}SHUTDOWN_GRACE"])
    if (drain, grace) != (answers["drain_delay_seconds"], answers["shutdown_grace_seconds"]):
        problems.append(f"drain {drain} / grace {grace} differ from the answers")
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    termination = pod["terminationGracePeriodSeconds"]
    if termination <= pre_stop + drain + grace:
        problems.append(
            f"terminationGracePeriodSeconds {termination} leaves no margin after preStop "
            f"{pre_stop} + drain {drain} + grace {grace}"
        )
    return problems


def envoy_problems(config: dict[str, Any], answers: dict[str, Any]) -> list[str]:
    """Upstream protocol, health checks, retries, and the drain budget of the front proxy."""
    problems = []
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c.get("health_checks")]
    (check,) = cluster["health_checks"]
    detection = seconds(check["interval"]) * check["unhealthy_threshold"] + seconds(
        check["timeout"]
    )
    if detection > answers["drain_delay_seconds"]:
        problems.append(
            f"Envoy notices a draining pod after up to {detection} s, longer than the drain delay "
            f"({answers['drain_delay_seconds']} s): it would send requests to a stopped server"
        )
    if seconds(check.get("no_traffic_interval", "60s")) > seconds(check["interval"]):
        problems.append("an idle cluster is health-checked only every no_traffic_interval")
    options = json.dumps(cluster.get("typed_extension_protocol_options", {}))
    retry_ons = [
        m["retry_policy"]["retry_on"]
        for m in walk(config["static_resources"])
        if "retry_policy" in m
    ]
    if answers["transport"] != "fastapi":
        if "http2_protocol_options" not in options:
            problems.append("the gRPC upstream is not HTTP/2 (typed_extension_protocol_options)")
        if "grpc_health_check" not in check:
            problems.append("the gRPC cluster has no grpc_health_check")
        if not any("unavailable" in r and "reset" in r for r in retry_ons):
            problems.append("idempotent RPCs are not retried on reset/unavailable")
    elif check.get("http_health_check", {}).get("path") != "/readyz":
        problems.append("the HTTP cluster is not health-checked on /readyz")
    if "previous_hosts" not in json.dumps(config):
        problems.append("retries may go back to the pod that just failed (no previous_hosts)")
    problems += envoy_edge_problems(config)
    return problems


def envoy_heap_problems(config: dict[str, Any], memory_limit: str) -> list[str]:
    """Envoy's overload manager must act on a heap size below its container's memory limit."""
    units = {"Mi": 2**20, "Gi": 2**30, "m": 2**20, "g": 2**30}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", memory_limit).groups()  # type: ignore[union-attr]
    limit = int(number) * units.get(unit, 1)
    heaps = [m["max_heap_size_bytes"] for m in walk(config) if "max_heap_size_bytes" in m]
    if not heaps or not 0 < heaps[0] < limit:
        return [f"Envoy's heap limit {heaps} is not below its container's memory {memory_limit}"]
    return []


def envoy_edge_problems(config: dict[str, Any]) -> list[str]:
    """What a client may send is bounded, and retries are single and budgeted."""
    problems = []
    (ingress,) = [
        m
        for m in walk(config["static_resources"]["listeners"])
        if m.get("stat_prefix") == "ingress"
    ]
    if not ingress.get("max_request_headers_kb"):
        problems.append("the size of request headers is left to Envoy's default")
    if ingress.get("common_http_protocol_options", {}).get("max_headers_count") is None:
        problems.append("the number of request headers is left to Envoy's default")
    if not 0 < seconds(ingress.get("request_headers_timeout", "0s")) <= 60:
        problems.append(
            "slow senders may take forever over their headers (request_headers_timeout)"
        )
    for policy in [
        m["retry_policy"] for m in walk(config["static_resources"]) if "retry_policy" in m
    ]:
        if policy.get("num_retries") != 1:
            problems.append(f"a retry policy retries {policy.get('num_retries')} times, not once")
    budgets = [m for m in walk(config["static_resources"]["clusters"]) if "retry_budget" in m]
    if not budgets:
        problems.append("retries have no retry_budget in the cluster's circuit breakers")
    return problems


def kubernetes_problems(project: Path, answers: dict[str, Any]) -> list[str]:
    resources = manifests(project)
    problems = [p for document in resources.values() for p in kubernetes_schema_problems(document)]
    problems += service_deployment_problems(resources["deployment.yaml"], answers)
    problems += pod_problems(
        "envoy-deployment.yaml", resources["envoy-deployment.yaml"]["spec"]["template"]
    )
    for name, document in resources.items():
        policy = document["spec"].get("unhealthyPodEvictionPolicy")
        if document["kind"] == "PodDisruptionBudget" and policy != "AlwaysAllow":
            problems.append(f"{name}: unhealthyPodEvictionPolicy is not AlwaysAllow")
    kustomization = yaml.safe_load((project / "deploy/kubernetes/kustomization.yaml").read_text())
    if sorted(kustomization["resources"]) != sorted(resources):
        problems.append(
            f"kustomization.yaml lists {kustomization['resources']}, not {sorted(resources)}"
        )
    envoy = yaml.safe_load((project / "deploy/kubernetes/envoy.yaml").read_text())
    problems += envoy_problems(envoy, answers)
    (proxy,) = resources["envoy-deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    problems += envoy_heap_problems(envoy, proxy["resources"]["limits"]["memory"])
    return problems


@pytest.mark.matrix
@pytest.mark.parametrize("combination", by_deployment("kubernetes"), ids=str)
def test_kubernetes(combination: Combination, rendered: Callable[[Combination], Path]) -> None:
    """Strict 1.30 schemas, restricted pod security, probes, budget; Envoy accepts its config."""
    project = rendered(combination)
    problems = kubernetes_problems(project, answers_of(project))
    assert not problems, "\n".join(problems)
    result = envoy_validate(project / "deploy" / "kubernetes" / "envoy.yaml")
    assert result.returncode == 0, f"envoy --mode validate:\n{result.stdout}"
    deprecated = [line for line in result.stdout.splitlines() if "Deprecated field" in line]
    assert not deprecated, "envoy.yaml uses deprecated fields:\n" + "\n".join(deprecated)


@pytest.mark.matrix
@pytest.mark.parametrize("combination", by_deployment("kubernetes"), ids=str)
def test_kustomize_build(combination: Combination, rendered: Callable[[Combination], Path]) -> None:
    """`kubectl kustomize` builds the directory, and what it builds passes the strict schemas."""
    if not shutil.which("kubectl"):
        # Installed where it can be; where it cannot, the script says what to install and fails.
        run(["bash", REPO / "scripts" / "debian-tools.sh", "kubectl"], timeout=900)
    kubectl = shutil.which("kubectl")
    assert kubectl, "scripts/debian-tools.sh installed no kubectl"
    project = rendered(combination)
    built = run([kubectl, "kustomize", project / "deploy" / "kubernetes"]).stdout
    documents = list(yaml.safe_load_all(built))
    problems = [p for document in documents for p in kubernetes_schema_problems(document)]
    assert not problems, "\n".join(problems)
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    (proxy,) = [
        d
        for d in documents
        if d["metadata"]["name"].endswith("-envoy") and d["kind"] == "Deployment"
    ]
    mounted = [v["configMap"]["name"] for v in proxy["spec"]["template"]["spec"]["volumes"]]
    assert mounted == [config_map["metadata"]["name"]], "Envoy does not mount the generated config"


# --- ECS Fargate ----------------------------------------------------------------------------------


def lower_keys(node: object) -> object:
    """CloudFormation's PascalCase keys as the ECS API's camelCase, to compare the two."""
    if isinstance(node, dict):
        return {key[0].lower() + key[1:]: lower_keys(value) for key, value in node.items()}
    if isinstance(node, list):
        return [lower_keys(item) for item in node]
    return node


def ecs_problems(project: Path, answers: dict[str, Any]) -> list[str]:
    directory = project / "deploy" / "ecs_fargate"
    task_definition = json.loads((directory / "task-definition.json").read_text())
    problems = botocore_problems(task_definition)
    (container,) = task_definition["containerDefinitions"]
    health = container.get("healthCheck", {}).get("command", [])
    if health[:1] != ["CMD"] or health[1:] != [
        "/app/.venv/bin/python",
        "-m",
        f"{answers['package_name']}.healthcheck",
    ]:
        problems.append(
            f"the container health check is not the exec form of the healthcheck: {health}"
        )
    drain, grace = answers["drain_delay_seconds"], answers["shutdown_grace_seconds"]
    if not drain + grace < container["stopTimeout"] <= FARGATE_MAX_STOP_TIMEOUT:
        problems.append(f"stopTimeout {container['stopTimeout']}: not within (drain + grace, 120]")
    if not container.get("readonlyRootFilesystem"):
        problems.append("the root file system is writable")
    if {"containerPath": "/tmp", "sourceVolume": "tmp", "readOnly": False} not in container[
        "mountPoints"
    ]:
        problems.append("no writable /tmp for the forkserver")

    (template,) = load_yaml_documents((directory / "cloudformation.yaml").read_text())
    resources = template["Resources"]
    (cfn_container,) = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    same = {"healthCheck", "stopTimeout", "portMappings", "environment", "user", "mountPoints"}
    for key in sorted(same):
        if lower_keys(cfn_container)[key] != container[key]:  # type: ignore[index]
            problems.append(f"cloudformation.yaml and task-definition.json differ in {key}")
    group = resources["TargetGroup"]["Properties"]
    if answers["transport"] == "fastapi":
        expected = {"HealthCheckPath": "/readyz", "Matcher": {"HttpCode": "200"}}
    else:
        expected = {
            "ProtocolVersion": "GRPC",
            "HealthCheckPath": "/grpc.health.v1.Health/Check",
            "Matcher": {"GrpcCode": "0"},
        }
    for key, value in expected.items():
        if group.get(key) != value:
            problems.append(f"target group {key} is {group.get(key)!r}, expected {value!r}")
    return problems


@pytest.mark.matrix
@pytest.mark.parametrize("combination", by_deployment("ecs_fargate"), ids=str)
def test_ecs_fargate(combination: Combination, rendered: Callable[[Combination], Path]) -> None:
    """cfn-lint passes; the task definition matches RegisterTaskDefinition and the template."""
    project = rendered(combination)
    problems = ecs_problems(project, answers_of(project))
    assert not problems, "\n".join(problems)
    findings = cfn_lint(project / "deploy" / "ecs_fargate" / "cloudformation.yaml")
    assert not findings, "cfn-lint:\n" + "\n".join(findings)


# --- docker compose -------------------------------------------------------------------------------


def compose_config(compose: list[str], file: Path) -> subprocess.CompletedProcess[str]:
    return run([*compose, "-f", file, "config", "--format", "json"], cwd=file.parent, check=False)


def compose_problems(config: dict[str, Any], answers: dict[str, Any]) -> list[str]:
    problems = []
    slug = answers["project_slug"]
    service, proxy = config["services"][slug], config["services"][f"{slug}-envoy"]
    if service.get("read_only") is not True or "/tmp" not in service.get("tmpfs", []):
        problems.append("not read_only with a tmpfs at /tmp")
    stop = seconds(service.get("stop_grace_period", "10s"))
    if stop <= answers["drain_delay_seconds"] + answers["shutdown_grace_seconds"]:
        problems.append(f"stop_grace_period {stop} s does not cover drain + grace")
    test = service.get("healthcheck", {}).get("test", [])
    if test[:1] != ["CMD"] or f"{answers['package_name']}.healthcheck" not in test:
        problems.append(f"the health check is not the exec form of the healthcheck: {test}")
    published = {int(port["target"]) for port in service.get("ports", [])}
    if answers["port"] in published:
        problems.append(f"the service's port {answers['port']} is published, bypassing Envoy")
    if answers["port"] not in {int(port["target"]) for port in proxy.get("ports", [])}:
        problems.append(f"Envoy does not publish port {answers['port']}")
    if proxy.get("read_only") is not True or proxy.get("cap_drop") != ["ALL"]:
        problems.append("Envoy is not read_only with all capabilities dropped")
    mounts = [m for m in proxy.get("volumes", []) if m.get("target") == "/etc/envoy/envoy.yaml"]
    if not mounts or not mounts[0]["source"].endswith("/deploy/compose/envoy.yaml"):
        problems.append("Envoy does not mount deploy/compose/envoy.yaml")
    return problems


@pytest.mark.matrix
@pytest.mark.parametrize("combination", by_deployment("compose"), ids=str)
def test_compose(
    combination: Combination, rendered: Callable[[Combination], Path], compose_command: list[str]
) -> None:
    """`docker compose config` accepts the file; drain budget, read-only root, health check;
    Envoy in front, and it accepts its config."""
    project = rendered(combination)
    result = compose_config(compose_command, project / "deploy" / "compose" / "compose.yaml")
    assert result.returncode == 0, f"compose config:\n{result.stdout}"
    config = json.loads(result.stdout[result.stdout.index("{") :])
    answers = answers_of(project)
    envoy = yaml.safe_load((project / "deploy/compose/envoy.yaml").read_text())
    problems = compose_problems(config, answers) + envoy_problems(envoy, answers)
    proxy = yaml.safe_load((project / "deploy/compose/compose.yaml").read_text())["services"][
        f"{answers['project_slug']}-envoy"
    ]
    problems += envoy_heap_problems(envoy, proxy["deploy"]["resources"]["limits"]["memory"])
    assert not problems, "\n".join(problems)
    result = envoy_validate(project / "deploy" / "compose" / "envoy.yaml")
    assert result.returncode == 0, f"envoy --mode validate:\n{result.stdout}"


# --- Negative controls: each validator rejects a rendered file with one mistake -----------------


@pytest.fixture
def mutable(
    rendered: Callable[[Combination], Path], tmp_path: Path
) -> Callable[[Combination], Path]:
    """A private copy of a rendered project, free to break."""

    def get(combination: Combination) -> Path:
        copy_dir = tmp_path / combination.id
        shutil.copytree(rendered(combination), copy_dir)
        return copy_dir

    return get


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def test_hadolint_rejects_a_shell_form_entrypoint(mutable: Callable[[Combination], Path]) -> None:
    dockerfile = mutable(example("compose")) / "Dockerfile"
    text = dockerfile.read_text()
    entrypoint = re.search(r"^ENTRYPOINT .*$", text, flags=re.MULTILINE)
    assert entrypoint
    dockerfile.write_text(text.replace(entrypoint[0], "ENTRYPOINT python -m service"))
    result = hadolint(dockerfile)
    assert result.returncode != 0 and "DL3025" in result.stdout, result.stdout


def test_dockerfile_check_rejects_a_shell_healthcheck(
    mutable: Callable[[Combination], Path],
) -> None:
    project = mutable(example("compose"))
    text = (project / "Dockerfile").read_text()
    broken = re.sub(r"CMD \[.*\]", "CMD python -m x.healthcheck || exit 1", text)
    assert broken != text
    problems = dockerfile_problems(broken, answers_of(project))
    assert any("HEALTHCHECK" in problem for problem in problems), problems


def test_kubernetes_strict_schema_rejects_a_misspelt_key(
    mutable: Callable[[Combination], Path],
) -> None:
    project = mutable(example("kubernetes"))
    deployment = manifests(project)["deployment.yaml"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["periodSecnds"] = container["readinessProbe"].pop("periodSeconds")
    problems = kubernetes_schema_problems(deployment)
    assert problems and "periodSecnds" in problems[0], problems


def test_kubernetes_schema_rejects_an_unknown_kind() -> None:
    problems = kubernetes_schema_problems(
        {"apiVersion": "v1", "kind": "Deploymnt", "metadata": {"name": "x"}}
    )
    assert problems


def test_termination_budget_check_catches_a_short_grace_period(
    rendered: Callable[[Combination], Path],
) -> None:
    project = rendered(example("kubernetes"))
    deployment = copy.deepcopy(manifests(project)["deployment.yaml"])
    answers = answers_of(project)
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = answers[
        "shutdown_grace_seconds"
    ]
    problems = service_deployment_problems(deployment, answers)
    assert any("terminationGracePeriodSeconds" in problem for problem in problems), problems


@pytest.mark.parametrize("transport", ["fastapi", "grpc"])
def test_drain_budget_check_catches_slow_envoy_health_checks(
    rendered: Callable[[Combination], Path], transport: str
) -> None:
    project = rendered(example("kubernetes", transport))
    envoy = yaml.safe_load((project / "deploy/kubernetes/envoy.yaml").read_text())
    slow = copy.deepcopy(envoy)
    (cluster,) = [c for c in slow["static_resources"]["clusters"] if c.get("health_checks")]
    cluster["health_checks"][0]["interval"] = "10s"
    del cluster["health_checks"][0]["no_traffic_interval"]
    problems = envoy_problems(slow, answers_of(project))
    assert any("drain delay" in p for p in problems) and any("no_traffic" in p for p in problems)


def test_edge_check_catches_unbounded_headers_and_repeated_retries(
    rendered: Callable[[Combination], Path],
) -> None:
    project = rendered(example("compose", "fastapi"))
    config = yaml.safe_load((project / "deploy/compose/envoy.yaml").read_text())
    for node in walk(config):
        for key in ("request_headers_timeout", "max_request_headers_kb", "retry_budget"):
            node.pop(key, None)
        if "retry_policy" in node:
            node["retry_policy"]["num_retries"] = 3
    problems = "\n".join(envoy_edge_problems(config))
    for expected in ("size of request headers", "slow senders", "not once", "retry_budget"):
        assert expected in problems, problems


def test_envoy_rejects_an_unknown_field(mutable: Callable[[Combination], Path]) -> None:
    config = mutable(example("kubernetes", "grpc")) / "deploy" / "kubernetes" / "envoy.yaml"
    replace_once(config, "grpc_health_check: {}", "grpc_health_check: {service_nam: x}")
    result = envoy_validate(config)
    assert result.returncode != 0 and "service_nam" in result.stdout, result.stdout


def test_envoy_rejects_an_unknown_cluster(mutable: Callable[[Combination], Path]) -> None:
    config = mutable(example("kubernetes", "fastapi")) / "deploy" / "kubernetes" / "envoy.yaml"
    replace_once(config, "cluster: envoy_admin", "cluster: envoy_admn")
    result = envoy_validate(config)
    assert result.returncode != 0 and "envoy_admn" in result.stdout, result.stdout


def test_cfn_lint_rejects_a_misspelt_property(mutable: Callable[[Combination], Path]) -> None:
    template = (
        mutable(example("ecs_fargate", "grpc")) / "deploy" / "ecs_fargate" / "cloudformation.yaml"
    )
    replace_once(template, "HealthCheckPath:", "HealthCheckPth:")
    findings = cfn_lint(template)
    assert any("HealthCheckPth" in finding for finding in findings), findings


def test_botocore_rejects_a_misspelt_task_definition_key(
    rendered: Callable[[Combination], Path],
) -> None:
    project = rendered(example("ecs_fargate"))
    task_definition = json.loads((project / "deploy/ecs_fargate/task-definition.json").read_text())
    container = task_definition["containerDefinitions"][0]
    container["stopTimeOut"] = container.pop("stopTimeout")
    problems = botocore_problems(task_definition)
    assert any("stopTimeOut" in problem for problem in problems), problems


def test_ecs_check_catches_a_shell_health_check(mutable: Callable[[Combination], Path]) -> None:
    project = mutable(example("ecs_fargate"))
    replace_once(project / "deploy/ecs_fargate/task-definition.json", '["CMD",', '["CMD-SHELL",')
    problems = ecs_problems(project, answers_of(project))
    assert any("exec form" in problem for problem in problems), problems


def test_compose_rejects_a_misspelt_key(
    mutable: Callable[[Combination], Path], compose_command: list[str]
) -> None:
    file = mutable(example("compose")) / "deploy" / "compose" / "compose.yaml"
    replace_once(file, "stop_grace_period:", "stop_grace_perod:")
    result = compose_config(compose_command, file)
    assert result.returncode != 0 and "stop_grace_perod" in result.stdout, result.stdout


# --- The front proxy, running: Envoy notices a draining pod before it stops -----------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], object], what: str, logs: list[Path], timeout: float = 30
) -> object:
    """Poll ``condition`` until it is true; at the deadline, fail showing the processes' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    shown = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in logs)
    # The reason last as well: a long log is cut in the middle when CI prints the failure.
    raise AssertionError(
        f"gave up after {timeout} s waiting for {what}\n{shown}\n--- gave up waiting for {what}"
    )


def loopback_envoy_config(config: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
    """envoy.yaml with every address on loopback and free ports, the service on ``ports``."""
    local = copy.deepcopy(config)
    local["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    for listener in local["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(
            address="127.0.0.1", port_value=ports[listener["name"]]
        )
    for cluster in local["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                port = ports["admin"] if cluster["name"] == "envoy_admin" else ports["service"]
                address.update(address="127.0.0.1", port_value=port)
    return local


def health_flags(admin_port: int, cluster: str) -> str:
    """The service host's health flags as Envoy's admin /clusters shows them ('' if not yet)."""
    url = f"http://127.0.0.1:{admin_port}/clusters"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return ""
    flags = [
        line
        for line in text.splitlines()
        if line.startswith(f"{cluster}::") and "::health_flags::" in line
    ]
    return flags[0].rsplit("::", 1)[-1] if flags else ""


@contextmanager
def process(
    command: list[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process writing to ``log``; killed (its whole group) if still running."""
    with log.open("wb") as output:
        child = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def request_through(
    proxy: str, project: Path, answers: dict[str, Any], env: dict[str, str]
) -> None:
    """One call of the service's API through the proxy; fails unless it succeeds."""
    if answers["transport"] == "fastapi":
        request = urllib.request.Request(
            f"http://{proxy}/v1/documents:validate",
            data=json.dumps({"name": "Ada", "email": "ada@example.com"}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["valid"] is True
    else:
        # The standard health check, as an RPC through Envoy's HTTP/2 route.
        healthcheck = ["python", "-m", f"{answers['package_name']}.healthcheck", "--address", proxy]
        result = run(healthcheck, cwd=project, env=env, check=False)
        assert result.returncode == 0, result.stdout


def observe_drain(project: Path, venv: Path, cache: Path, workdir: Path, **settings: str) -> bool:
    """Run the service behind the generated envoy.yaml, send it SIGTERM, and tell whether it was
    still running when Envoy's health check marked it failed. It must then exit 0."""
    answers = answers_of(project)
    cluster = answers["project_slug"]
    ports = {name: free_port() for name in ("admin", "ingress", "ops", "service", "metrics")}
    config = yaml.safe_load((project / "deploy/kubernetes/envoy.yaml").read_text())
    local_config = workdir / "envoy.yaml"
    local_config.write_text(yaml.safe_dump(loopback_envoy_config(config, ports)))
    prefix = answers["package_name"].upper() + "_"
    env = tool_env(venv, mypy_cache=cache)
    env.update(
        {
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(ports["service"]),
            f"{prefix}METRICS_PORT": str(ports["metrics"]),
            f"{prefix}OFFLOAD_WORKERS": "1",
            **{prefix + name.upper(): value for name, value in settings.items()},
        }
    )
    service_command = [str(venv / "bin" / "python"), "-m", answers["package_name"]]
    envoy = [tool("envoy"), "-c", str(local_config), "--disable-hot-restart", "--concurrency", "1"]
    logs = [workdir / "service.log", workdir / "envoy.log"]
    with (
        process(service_command, logs[0], cwd=project, env=env) as service,
        process(envoy, logs[1], cwd=workdir) as proxy,
    ):
        # Starting takes seconds, but on a machine busy with the rest of the suite it may take
        # many: the process pool's workers import the service too.
        wait_until(
            lambda: health_flags(ports["admin"], cluster) == "healthy",
            "a healthy pod",
            logs,
            timeout=90,
        )
        request_through(f"127.0.0.1:{ports['ingress']}", project, answers, env)
        service.send_signal(signal.SIGTERM)
        wait_until(
            lambda: "failed_active_hc" in health_flags(ports["admin"], cluster),
            "Envoy to mark the pod failed",
            logs,
        )
        running_when_noticed = service.poll() is None
        assert service.wait(timeout=120) == 0, logs[0].read_text()
        assert proxy.poll() is None, logs[1].read_text()
    return running_when_noticed


@pytest.mark.matrix
@pytest.mark.parametrize(
    "combination",
    [c for c in by_deployment("kubernetes") if c["executor"] == default("executor")],
    ids=str,
)
def test_envoy_stops_routing_before_the_service_exits(
    combination: Combination,
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
    tmp_path: Path,
) -> None:
    """The real Envoy with the generated envoy.yaml, in front of the real service: a request
    passes through; after SIGTERM Envoy marks the pod failed while it is still draining (so no
    request goes to a closed port), and the service then exits 0."""
    project = prepared(combination)
    assert observe_drain(project, shared_venv, worker_cache, tmp_path), (
        "the service exited before Envoy marked it unhealthy: the drain delay is shorter than "
        "Envoy's detection time (envoy.yaml's health check interval x unhealthy_threshold)"
    )


def test_drain_order_check_catches_a_missing_drain_delay(
    prepared: Callable[[Combination], Path],
    shared_venv: Path,
    worker_cache: Path,
    tmp_path: Path,
) -> None:
    """Negative control: without a drain delay the service is gone before Envoy notices."""
    project = prepared(example("kubernetes", "fastapi"))
    assert not observe_drain(project, shared_venv, worker_cache, tmp_path, drain_delay="0")


# --- The image, built and run with podman (installed by scripts/container-runtime.sh) -------------


PODMAN_LOCK = CACHE.parent / "podman" / "tests.lock"


@pytest.fixture(scope="session")
def podman_env() -> Iterator[dict[str, str]]:
    """The environment for podman as scripts/container-runtime.sh sets it up (idempotent).

    Its storage is the project's own (build/podman/), so the images that earlier runs left
    behind are pruned at the end.
    """
    # The script installs podman where it can (root and apt-get): then a failure is a failure.
    if not shutil.which("podman") and (os.geteuid() != 0 or not shutil.which("apt-get")):
        pytest.skip(
            "podman is not installed and this user cannot install it (needs root and apt-get): "
            "install podman, or run scripts/container-runtime.sh as root"
        )
    output = run(["bash", REPO / "scripts" / "container-runtime.sh"], timeout=900).stdout
    settings = dict(re.findall(r"(\w+)='([^']*)'", output))
    assert "CONTAINER_BASE_PYTHON" in settings, output
    env = {**os.environ, **settings}
    yield env
    with locked(PODMAN_LOCK):
        podman(env, "image", "prune", "--force", check=False)


def podman(env: dict[str, str], *args: str | Path, check: bool = True, timeout: float = 600) -> str:
    return run(["podman", *args], env=env, check=check, timeout=timeout).stdout


def build_image(
    project: Path, tag: str, env: dict[str, str], dockerfile: str = "Dockerfile"
) -> None:
    # --format docker keeps HEALTHCHECK; the CA bundle lets pip and uv through this machine's
    # TLS-inspecting proxy; --pull=never uses the local stand-in base image.
    ca_bundle = "/etc/ssl/certs/ca-certificates.crt"
    with locked(PODMAN_LOCK):  # one build at a time, and never during a prune
        podman(
            env, "build", "--format", "docker", "--pull=never", "--quiet",
            "--volume", f"{ca_bundle}:{ca_bundle}:ro", "--file", dockerfile, "--tag", tag, project,
        )  # fmt: skip


def stop_exit_code(env: dict[str, str], name: str, timeout: int) -> int:
    """``podman stop`` (SIGTERM, then SIGKILL after ``timeout``) and the container's exit code."""
    podman(env, "stop", "--time", str(timeout), name, timeout=timeout + 60)
    return int(podman(env, "inspect", "--format", "{{.State.ExitCode}}", name).strip())


@contextmanager
def container(env: dict[str, str], image: str, *options: str) -> Iterator[str]:
    """A running container of ``image``, hardened like the compose file; removed afterwards."""
    name = f"deployment-test-{os.getpid()}-{time.monotonic_ns()}"
    podman(
        env, "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *options, image,
    )  # fmt: skip
    try:
        yield name
    finally:
        podman(env, "rm", "--force", name, check=False)


@pytest.fixture(scope="session")
def image_project(
    template: Path, session_dir: Path, podman_env: dict[str, str]
) -> Callable[[str], Path]:
    """A project for the stand-in base image's Python, with its lock file."""

    def get(transport: str) -> Path:
        project = session_dir / "images" / transport

        def build() -> None:
            data = {
                **example("compose", transport).data,
                "python_version": podman_env["CONTAINER_BASE_PYTHON"],
            }
            render(template, project, data)
            run(["uv", "lock", "--quiet"], cwd=project, timeout=300)
            # No gRPC code here: building the image generates it (hatch_build.py).

        once(session_dir / "images" / f"{transport}.rendered", build)
        return project

    return get


@pytest.mark.parametrize("transport", ["fastapi", "grpc", "grpc_aio"])
def test_image_builds_runs_and_stops_cleanly(
    transport: str, image_project: Callable[[str], Path], podman_env: dict[str, str]
) -> None:
    """The generated Dockerfile builds; the container becomes healthy by its own HEALTHCHECK,
    serves on its published port, and `podman stop` (SIGTERM) ends it with exit code 0."""
    project = image_project(transport)
    answers = answers_of(project)
    tag = f"localhost/{answers['project_slug']}-{transport.replace('_', '-')}:test"
    build_image(project, tag, podman_env)
    host_port = free_port()
    with container(
        podman_env, tag, "--publish", f"127.0.0.1:{host_port}:{answers['port']}"
    ) as name:
        healthy = ["podman", "healthcheck", "run", name]
        wait_until(
            lambda: run(healthy, env=podman_env, check=False).returncode == 0,
            "the image's HEALTHCHECK to pass",
            [],
            timeout=90,
        )
        if transport == "fastapi":
            url = f"http://127.0.0.1:{host_port}/readyz"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
        compose = yaml.safe_load((project / "deploy/compose/compose.yaml").read_text())
        service = compose["services"][answers["project_slug"]]
        exit_code = stop_exit_code(podman_env, name, int(seconds(service["stop_grace_period"])))
        assert exit_code == 0, podman(podman_env, "logs", name, check=False)[-4000:]


def test_shell_form_entrypoint_is_killed_instead_of_stopping(
    image_project: Callable[[str], Path], podman_env: dict[str, str], tmp_path: Path
) -> None:
    """Negative control: with a shell as PID 1, SIGTERM never reaches the service, and the
    container is killed (137) at the end of the stop timeout."""
    project = image_project("fastapi")
    answers = answers_of(project)
    dockerfile = tmp_path / "Dockerfile.shell-form"
    text = (project / "Dockerfile").read_text()
    shell_form = f"ENTRYPOINT /app/.venv/bin/python -m {answers['package_name']}"
    dockerfile.write_text(re.sub(r"^ENTRYPOINT .*$", shell_form, text, flags=re.MULTILINE))
    tag = f"localhost/{answers['project_slug']}-shell-form:test"
    build_image(project, tag, podman_env, dockerfile=str(dockerfile))
    with container(podman_env, tag) as name:
        healthy = ["podman", "healthcheck", "run", name]
        wait_until(
            lambda: run(healthy, env=podman_env, check=False).returncode == 0,
            "the image's HEALTHCHECK to pass",
            [],
            timeout=90,
        )
        assert stop_exit_code(podman_env, name, 3) == 137


# --- Scale-out: KEDA's ScaledObject (kubernetes), Application Auto Scaling (ecs_fargate) --------

# Custom resources kubernetes-validate has no schema for: their CRD's own openAPIV3Schema.
CUSTOM_RESOURCE_SCHEMAS = {
    "keda.sh/v1alpha1": REPO / "tests" / "data" / "keda-scaledobject-v2.20.2.schema.json",
}


def strict(schema: object) -> object:
    """The schema with unknown fields rejected wherever it lists the known ones.

    A CRD schema leaves ``additionalProperties`` out, and the API server's strict field
    validation (kubectl's default) rejects unknown fields anyway; this makes jsonschema do the
    same. ``metadata`` lists no properties, so it stays open.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if "properties" in tightened and "additionalProperties" not in tightened:
        tightened["additionalProperties"] = False
    return tightened


@cache
def custom_resource_validator(api_version: str) -> jsonschema.Draft7Validator:
    schema = json.loads(CUSTOM_RESOURCE_SCHEMAS[api_version].read_text())
    return jsonschema.Draft7Validator(strict(schema))


def custom_resource_problems(document: dict[str, Any]) -> list[str]:
    if document.get("kind") != "ScaledObject":
        return [f"{document.get('kind')}: not a kind of {document['apiVersion']} this test knows"]
    validator = custom_resource_validator(document["apiVersion"])
    return [
        f"ScaledObject {document['metadata'].get('name')}: "
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def hpa_keda_makes(scaled: dict[str, Any]) -> dict[str, Any]:
    """The HorizontalPodAutoscaler KEDA derives from a ScaledObject (behaviour passed as is)."""
    spec = scaled["spec"]
    metrics: list[dict[str, Any]] = []
    for index, trigger in enumerate(spec["triggers"]):
        if trigger["type"] == "cpu":
            utilization = int(trigger["metadata"]["value"])
            target = {"type": "Utilization", "averageUtilization": utilization}
            metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
        else:
            target = {"type": "AverageValue", "averageValue": trigger["metadata"]["threshold"]}
            metric = {"name": f"s{index}-{trigger['type']}"}
            metrics.append({"type": "External", "external": {"metric": metric, "target": target}})
    hpa = spec["advanced"]["horizontalPodAutoscalerConfig"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": hpa["name"]},
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "metrics": metrics,
            "behavior": hpa["behavior"],
        },
    }


def autoscaling_problems(project: Path, answers: dict[str, Any]) -> list[str]:
    resources = manifests(project)
    scaled = resources["scaledobject.yaml"]
    deployment = resources["deployment.yaml"]
    problems = kubernetes_schema_problems(scaled)
    problems += kubernetes_schema_problems(hpa_keda_makes(scaled))
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    if (target.get("kind"), target["name"]) != ("Deployment", deployment["metadata"]["name"]):
        problems.append(f"the ScaledObject scales {target}, not the service's Deployment")
    if "replicas" in deployment["spec"]:
        problems.append("deployment.yaml sets replicas: every apply would undo the autoscaler")
    unavailable = resources["pdb.yaml"]["spec"]["maxUnavailable"]
    if not unavailable < spec["minReplicaCount"] <= spec["maxReplicaCount"]:
        problems.append(
            f"minReplicaCount {spec['minReplicaCount']} leaves no pod serving while the budget "
            f"lets {unavailable} go (or exceeds maxReplicaCount)"
        )
    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    if set(triggers) != {"cpu", "prometheus"}:
        problems.append(f"triggers {sorted(triggers)}: expected cpu and prometheus")
        return problems
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    if triggers["cpu"]["metadata"].get("containerName") != container["name"]:
        problems.append("the cpu trigger does not name the service's container")
    if "cpu" not in container["resources"]["requests"]:
        problems.append("a CPU utilisation target needs a CPU request")
    query = triggers["prometheus"]["metadata"]["query"]
    if not {"offload_in_flight", "offload_queued"} <= set(re.findall(r"offload_\w+", query)):
        problems.append(f"the prometheus trigger does not sum offload demand: {query}")
    slug = answers["project_slug"]
    for pattern in re.findall(r'pod=~"([^"]+)"', query):
        # PromQL matches a regex against the whole label value.
        if not re.fullmatch(pattern, f"{slug}-7d9c6b5f4-x2kqz"):
            problems.append(f"{pattern} does not match the service's pods")
        if re.fullmatch(pattern, f"{slug}-envoy-6c8f9b7d5-q7w2n"):
            problems.append(f"{pattern} also matches the Envoy pods")
    workers = float(env_of(container)[f"{answers['package_name'].upper()}_OFFLOAD_WORKERS"])
    threshold = float(triggers["prometheus"]["metadata"]["threshold"])
    if not 0 < threshold <= workers:
        problems.append(f"offload threshold {threshold} per pod is outside (0, {workers} workers]")
    return problems


@pytest.mark.matrix
@pytest.mark.parametrize("combination", by_deployment("kubernetes"), ids=str)
def test_kubernetes_autoscaling(
    combination: Combination, rendered: Callable[[Combination], Path]
) -> None:
    """KEDA's CRD schema, the HPA it makes (strict 1.30), and agreement with Deployment and PDB."""
    project = rendered(combination)
    problems = autoscaling_problems(project, answers_of(project))
    assert not problems, "\n".join(problems)


def test_scaled_object_schema_rejects_mistakes(rendered: Callable[[Combination], Path]) -> None:
    scaled = manifests(rendered(example("kubernetes")))["scaledobject.yaml"]
    assert not custom_resource_problems(scaled)
    misspelt = copy.deepcopy(scaled)
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")
    problems = custom_resource_problems(misspelt)
    assert any("minReplicas" in problem for problem in problems), problems
    unquoted = copy.deepcopy(scaled)
    unquoted["spec"]["triggers"][1]["metadata"]["threshold"] = 1.5  # metadata is strings only
    problems = custom_resource_problems(unquoted)
    assert any("threshold" in problem for problem in problems), problems


def test_autoscaling_check_catches_a_fixed_replica_count(
    rendered: Callable[[Combination], Path], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(rendered(example("kubernetes")), project)
    deployment = project / "deploy" / "kubernetes" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("spec:\n", "spec:\n  replicas: 2\n", 1))
    problems = autoscaling_problems(project, answers_of(project))
    assert any("replicas" in problem for problem in problems), problems


def ecs_autoscaling_problems(template: dict[str, Any]) -> list[str]:
    resources = template["Resources"]
    targets = [r for r in resources.values() if r["Type"].endswith("::ScalableTarget")]
    if len(targets) != 1:
        return [f"expected one ScalableTarget, found {len(targets)}"]
    (target,) = targets
    problems = []
    if target["Properties"]["ScalableDimension"] != "ecs:service:DesiredCount":
        problems.append("the scalable target is not the service's desired count")
    if "${Service.Name}" not in json.dumps(target["Properties"]["ResourceId"]):
        problems.append("the scalable target does not address the template's Service")
    policies = {
        name: resource["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    }
    kinds = {
        config.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType")
        or "+".join(
            m["MetricStat"]["Metric"]["MetricName"]
            for m in config["CustomizedMetricSpecification"]["Metrics"]
            if "MetricStat" in m
        )
        for config in policies.values()
    }
    expected = {"ECSServiceAverageCPUUtilization", "offload_in_flight+offload_queued"}
    if kinds != expected:
        problems.append(f"target tracking on {sorted(kinds)}, expected {sorted(expected)}")
    return problems


@pytest.mark.matrix
@pytest.mark.parametrize("combination", by_deployment("ecs_fargate"), ids=str)
def test_ecs_fargate_autoscaling(
    combination: Combination, rendered: Callable[[Combination], Path]
) -> None:
    """Target tracking on CPU and on offload demand (cfn-lint runs in test_ecs_fargate)."""
    project = rendered(combination)
    template_path = project / "deploy" / "ecs_fargate" / "cloudformation.yaml"
    (template,) = load_yaml_documents(template_path.read_text())
    problems = ecs_autoscaling_problems(template)
    assert not problems, "\n".join(problems)


def test_cfn_lint_rejects_a_broken_scaling_policy(mutable: Callable[[Combination], Path]) -> None:
    template = mutable(example("ecs_fargate")) / "deploy" / "ecs_fargate" / "cloudformation.yaml"
    replace_once(
        template,
        "PredefinedMetricType: ECSServiceAverageCPUUtilization",
        "PredefinedMetricType: ECSServiceAverageCPUUtilisation",
    )
    findings = cfn_lint(template)
    assert any("ECSServiceAverageCPUUtilisation" in finding for finding in findings), findings
