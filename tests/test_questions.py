"""Bad answers are refused with a message that says what is wrong and what is allowed.

Through the real ``copier`` command line: with ``--defaults --data`` (the exit status is non-zero,
no traceback is printed and nothing is written) and interactively, in a terminal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pexpect
import pyte
import pytest
import yaml
from combinations import REPO, asked_questions, choice_values, default
from support import run

sys.path.insert(0, str(REPO / "extensions"))
import names


def copier_cli() -> str:
    found = shutil.which("copier")
    assert found, "copier is not on PATH: run the tests with scripts/test"
    return found


def refused(template: Path, destination: Path, data: dict[str, str]) -> tuple[int, str]:
    arguments = [copier_cli(), "copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD"]
    for name, value in data.items():
        arguments += ["--data", f"{name}={value}"]
    result = run([*arguments, template, destination], check=False, timeout=120)
    return result.returncode, result.stdout


def choice_case(name: str, bad: str) -> pytest.ParameterSet:
    allowed = choice_values(name)
    return pytest.param({name: bad}, [f"{bad!r} is not in"], allowed, id=f"{name}={bad}")


# (answers given with --data, what the message must say is wrong, what it must say is allowed)
REFUSALS = [
    pytest.param(
        {"project_name": " "},
        ["project name must not be empty"],
        ["Invoice Validator"],
        id="project_name-empty",
    ),
    pytest.param(
        {"project_name": "東京サービス"},
        ["has no ASCII letters"],
        ["at least one letter a-z"],
        id="project_name-no-ascii",
    ),
    pytest.param(
        {"project_name": "Logging"},
        ["question 'package_name'", "'logging' would shadow"],
        ["logging_service"],
        id="project_name-derives-a-shadowing-package",
    ),
    pytest.param(
        {"project_slug": "My Service"},
        ["question 'project_slug'", "'My Service' is not allowed"],
        ["a-z, 0-9 and single dashes"],
        id="project_slug-space",
    ),
    pytest.param(
        {"project_slug": "my--service"},
        ["'my--service' is not allowed"],
        ["single dashes"],
        id="project_slug-double-dash",
    ),
    pytest.param(
        {"package_name": "my-service"},
        ["'my-service' is not allowed"],
        ["a-z, 0-9 and _"],
        id="package_name-dash",
    ),
    pytest.param(
        {"package_name": "my service"},
        ["'my service' is not allowed"],
        ["starting with a letter"],
        id="package_name-space",
    ),
    pytest.param(
        {"package_name": "café"},
        ["'café' is not allowed"],
        ["a-z"],
        id="package_name-unicode",
    ),
    pytest.param(
        {"project_slug": "s" * 58},
        ["is 58 characters long"],
        ["at most 57"],
        id="project_slug-too-long",
    ),
    pytest.param(
        {"package_name": "p" * 31},
        ["is 31 characters long"],
        ["at most 30"],
        id="package_name-too-long",
    ),
    pytest.param(
        {"package_name": "2fast"},
        ["'2fast' is not allowed"],
        ["starting with a letter"],
        id="package_name-digit-first",
    ),
    pytest.param(
        {"package_name": "class"},
        ["'class' is a Python keyword"],
        ["class_service"],
        id="package_name-keyword",
    ),
    pytest.param(
        {"package_name": "match"},
        ["'match' is a Python keyword"],
        ["match_service"],
        id="package_name-soft-keyword",
    ),
    *[
        pytest.param(
            {"package_name": module},
            [f"{module!r} would shadow the module"],
            [f"{module}_service"],
            id=f"package_name-shadows-{module}",
        )
        for module in ("grpc", "json", "test", "logging", "fastapi")
    ],
    pytest.param(
        {"description": ""},
        ["description must not be empty"],
        ["one sentence"],
        id="description-empty",
    ),
    pytest.param(
        {"description": "First line.\nSecond line."},
        ["description must be one line"],
        ["one sentence"],
        id="description-two-lines",
    ),
    pytest.param(
        {"author_email": "jane"},
        ["'jane' is not an e-mail address"],
        ["jane@example.com"],
        id="author_email-no-at",
    ),
    pytest.param(
        {"author_email": "jane@example"},
        ["'jane@example' is not an e-mail address"],
        ["jane@example.com"],
        id="author_email-no-domain",
    ),
    pytest.param(
        {"port": "80"}, ["Port 80 is out of range"], ["1024 to 65535"], id="port-privileged"
    ),
    pytest.param(
        {"port": "65536"}, ["Port 65536 is out of range"], ["1024 to 65535"], id="port-too-big"
    ),
    pytest.param(
        {"port": "http"},
        ["question 'port'", "'http' is not a whole number"],
        [],
        id="port-not-a-number",
    ),
    pytest.param(
        {"transport": "grpc", "port": "50051", "metrics_port": "50051"},
        ["Port 50051 is the service port"],
        ["use another one"],
        id="metrics_port-same",
    ),
    pytest.param(
        {"transport": "grpc_aio", "metrics_port": "443"},
        ["Port 443 is out of range"],
        ["1024 to 65535"],
        id="metrics_port-privileged",
    ),
    pytest.param(
        {"stall_threshold_ms": "5"},
        ["question 'stall_threshold_ms'", "5 is out of range"],
        ["10 to 60000 milliseconds"],
        id="stall_threshold_ms-too-small",
    ),
    pytest.param(
        {"stall_threshold_ms": "600000"},
        ["600000 is out of range"],
        ["10 to 60000 milliseconds"],
        id="stall_threshold_ms-too-big",
    ),
    pytest.param(
        {"deployment": "compose", "drain_delay_seconds": "-1"},
        ["question 'drain_delay_seconds'", "-1 is out of range"],
        ["3 to 300 seconds"],
        id="drain_delay_seconds-negative",
    ),
    pytest.param(
        {"deployment": "compose", "drain_delay_seconds": "301"},
        ["301 is out of range"],
        ["3 to 300 seconds", "Envoy"],
        id="drain_delay_seconds-too-big",
    ),
    pytest.param(
        {"deployment": "kubernetes", "drain_delay_seconds": "2"},
        ["2 is out of range"],
        ["3 to 300 seconds", "Envoy"],
        id="drain_delay_seconds-shorter-than-envoy-notices",
    ),
    pytest.param(
        {"deployment": "ecs_fargate", "drain_delay_seconds": "111"},
        ["111 is out of range"],
        ["0 to 110 seconds", "120 s"],
        id="drain_delay_seconds-past-fargate-stop-timeout",
    ),
    pytest.param(
        {"deployment": "ecs_fargate", "drain_delay_seconds": "5", "shutdown_grace_seconds": "111"},
        ["question 'shutdown_grace_seconds'", "111 is out of range"],
        ["1 to 110 seconds", "<= 115 s"],
        id="shutdown_grace_seconds-past-fargate-stop-timeout",
    ),
    pytest.param(
        {"shutdown_grace_seconds": "0"},
        ["0 is out of range"],
        ["1 to 600 seconds"],
        id="shutdown_grace_seconds-zero",
    ),
    pytest.param(
        {"shutdown_grace_seconds": "601"},
        ["601 is out of range"],
        ["1 to 600 seconds"],
        id="shutdown_grace_seconds-too-big",
    ),
    choice_case("transport", "rest"),
    choice_case("executor", "fork"),
    choice_case("deployment", "heroku"),
    choice_case("python_version", "3.9"),
    choice_case("license", "GPL"),
]


@pytest.mark.parametrize(("data", "wrong", "allowed"), REFUSALS)
def test_bad_answer_is_refused_and_nothing_is_written(
    template: Path, tmp_path: Path, data: dict[str, str], wrong: list[str], allowed: list[str]
) -> None:
    destination = tmp_path / "svc"
    status, output = refused(template, destination, data)
    assert status != 0, f"copier accepted {data}:\n{output}"
    assert "Traceback" not in output, f"a traceback instead of a message:\n{output}"
    for text in [*wrong, *allowed]:
        assert text in output, f"the message does not say {text!r}:\n{output}"
    assert "Nothing was generated." in output
    assert not destination.exists(), f"{destination} was created although {data} was refused"
    # The same message is what the interactive prompt shows on one line of the terminal.
    for message in re.findall(r"^Validation error for question '\w+': (.*)$", output, re.M):
        assert len(message) <= names.MESSAGE_WIDTH, f"longer than one prompt line: {message!r}"


def test_refusal_leaves_an_existing_directory_untouched(template: Path, tmp_path: Path) -> None:
    destination = tmp_path / "existing"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine\n", encoding="utf-8")
    status, output = refused(template, destination, {"package_name": "json"})
    assert status != 0, output
    assert sorted(path.name for path in destination.iterdir()) == ["notes.txt"]


def test_every_validator_is_tested() -> None:
    """Each question with a validator or choices appears in REFUSALS (so one is not forgotten)."""
    covered = set()
    for case in REFUSALS:
        data = case.values[0]
        assert isinstance(data, dict)
        covered.update(data)
    checked = {
        name for name, spec in asked_questions().items() if "validator" in spec or "choices" in spec
    }
    assert checked <= covered, f"validators without a test: {sorted(checked - covered)}"


def test_package_names_of_installed_modules_are_refused(shared_venv: Path) -> None:
    """No package name may shadow a module installed in a generated project's environment.

    The environment holds every transport's dependencies and dev tools, so this is the real list
    of what a service or its tests may import; extensions/names.py must refuse each of them.
    """
    listing = run(
        [
            shared_venv / "bin" / "python",
            "-c",
            "import importlib.metadata as m, json\n"
            "names = set()\n"
            "for dist in m.distributions():\n"
            "    top = dist.read_text('top_level.txt')\n"
            "    if top:\n"
            "        names.update(top.split())\n"
            "        continue\n"
            "    for file in dist.files or []:\n"
            "        first = file.parts[0]\n"
            "        if first.endswith(('.dist-info', '.data', '.pth')) or first == '..':\n"
            "            continue\n"
            "        names.add(first.removesuffix('.py') if len(file.parts) == 1 else first)\n"
            "print(json.dumps(sorted(names)))\n",
        ]
    ).stdout
    installed = {
        name.replace("/", ".").split(".")[0]
        for name in json.loads(listing)
        if names.IDENTIFIER_RE.fullmatch(name)
    }
    accepted = sorted(name for name in installed if not names.package_name_problem(name))
    assert not accepted, (
        "extensions/names.py accepts package names that shadow installed modules; add them to "
        f"THIRD_PARTY_MODULES: {accepted}"
    )


# --- Interactively, in a real terminal ----------------------------------------------------------

# An ordinary terminal: copier's help texts and refusals must fit it.
ROWS, COLUMNS = 24, 80
QMARK = "🎤 "  # copier's mark before a question, two columns wide


def help_lines(name: str) -> list[str]:
    return [line.rstrip() for line in str(asked_questions()[name]["help"]).strip().splitlines()]


def test_every_help_line_fits_the_terminal() -> None:
    for name in asked_questions():
        lines = help_lines(name)
        widths = [len(QMARK) + 1 + len(lines[0]), *map(len, lines[1:])]
        assert max(widths) <= COLUMNS, f"{name}: a help line is cut at {COLUMNS} columns"


class Prompt:
    """Drives copier's questions in an 80x24 pseudo-terminal, the way a person answers them.

    Everything copier writes goes through a terminal emulator (pyte), so a check sees the
    screen a person sees: a line longer than the terminal is cut there, not wrapped.
    """

    CLEAR_LINE = "\x15"  # Ctrl-U: delete the pre-filled default

    def __init__(self, arguments: list[str], log: Path) -> None:
        env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "NO_COLOR": "1"}
        env["PYTHONWARNINGS"] = "ignore"  # copier warns that the template has uncommitted changes
        self.child = pexpect.spawn(
            arguments[0],
            arguments[1:],
            encoding="utf-8",
            dimensions=(ROWS, COLUMNS),
            env=env,
            timeout=30,
        )
        self.child.logfile_read = log.open("w", encoding="utf-8")  # shown when a test fails
        self.log = log
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def sees(self, text: str, timeout: float = 30) -> None:
        """Wait until ``text`` is on one line of the screen, whole."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines()):
            if time.monotonic() > deadline:
                screen = "\n".join(self.lines())
                raise AssertionError(f"{text!r} is not on the screen:\n{screen}")
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                continue

    def question(self, name: str) -> None:
        """Wait for the question: each line of its help whole on the screen."""
        lines = help_lines(name)
        self.sees(QMARK + lines[0])
        for line in lines[1:]:
            self.sees(line)

    def accept_default(self) -> None:
        self.child.send("\r")

    def type(self, answer: str) -> None:
        self.child.send(self.CLEAR_LINE + answer + "\r")

    def finish(self) -> int:
        self.child.expect(pexpect.EOF, timeout=120)
        self.child.close()
        return int(self.child.exitstatus or 0)


def test_interactive_prompt_refuses_bad_answers_and_accepts_corrections(
    template: Path, tmp_path: Path
) -> None:
    """At 80x24, each refusal is shown whole, on the line under the answer."""
    destination = tmp_path / "svc"
    prompt = Prompt(
        [
            copier_cli(),
            "copy",
            "--trust",
            "--skip-tasks",
            "--vcs-ref",
            "HEAD",
            str(template),
            str(destination),
        ],
        tmp_path / "terminal.log",
    )
    answers = {
        "package_name": "json_tools",
        "author_email": "dev@example.com",
        "port": "8080",
        "stall_threshold_ms": "250",
        "drain_delay_seconds": "4",
        "shutdown_grace_seconds": "30",
    }
    envoy = "Envoy needs 3 s to notice"
    bad = {
        "package_name": ["json", "p" * 31, "my service"],
        "author_email": ["dev at example.com, or else dev@example.org"],
        "port": ["http", "80"],
        "stall_threshold_ms": ["5", "100ms"],
        "drain_delay_seconds": ["2"],
        "shutdown_grace_seconds": ["0"],
    }
    expected = {
        "json": names.package_name_problem("json"),
        "p" * 31: names.package_name_problem("p" * 31),
        "my service": names.package_name_problem("my service"),
        "dev at example.com, or else dev@example.org": names.email_problem(
            "dev at example.com, or else dev@example.org"
        ),
        "http": "'http' is not a whole number.",
        "80": names.port_problem("80"),
        "5": names.range_problem("5", 10, 60000, "milliseconds"),
        "100ms": "'100ms' is not a whole number.",
        "2": names.range_problem("2", 3, 300, "seconds", envoy),
        "0": names.range_problem("0", 1, 600, "seconds"),
    }
    # The default transport asks every unconditional question, in copier.yml's order.
    asked = [name for name, spec in asked_questions().items() if "when" not in spec]
    for name in asked:
        prompt.question(name)
        for wrong in bad.get(name, []):
            prompt.type(wrong)
            assert len(expected[wrong]) <= names.MESSAGE_WIDTH
            prompt.sees(expected[wrong])
        if name in answers:
            prompt.type(answers[name])
        else:
            prompt.accept_default()
    status = prompt.finish()
    assert status == 0, prompt.log.read_text(encoding="utf-8")[-3000:]
    recorded = yaml.safe_load((destination / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert {name: str(recorded[name]) for name in answers} == answers
    assert recorded["transport"] == default("transport")
