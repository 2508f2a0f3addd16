"""What every rendered file must look like, whatever the answers.

Each function returns a list of problems ("path: what is wrong"), empty when all is well, so a
failing test lists every offending file at once.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path, PurePosixPath

import yaml
from combinations import Combination, axes
from support import run

# Paths that must not exist for an answer: fnmatch patterns matched against every rendered file
# and each of its parent directories.
ABSENT_WHEN = {
    ("transport", "fastapi"): [
        "buf.yaml",
        "proto",
        "scripts/protos.py",
        "src/*/transport/grpc",
        "src/*/v1",
        "tests/*grpc*",
    ],
    ("transport", "grpc"): [
        "src/*/transport/http",
        "tests/*http*",
        "src/*/transport/grpc/aio_*",
    ],
    ("transport", "grpc_aio"): [
        "src/*/transport/http",
        "tests/*http*",
        "src/*/transport/grpc/sync_*",
    ],
}
# Axes whose other answers must leave no trace in the file names: no directory and no file stem
# named after a deployment target that was not chosen (e.g. no kubernetes/ for compose).
ABSENT_BY_NAME = frozenset({"deployment"})

# Jinja's delimiters as a leftover would show them: "{{ name", "{% if", "{#". Python's doubled
# braces in f-strings and str.format ("{{1,{n}}}") do not match.
TEMPLATE_MARKER = re.compile(r"\{\{-?\s*[A-Za-z_]|\{%-?\s*[a-z]|\{#")
# GitHub Actions expressions look like Jinja and are meant to stay: ${{ matrix.python }}.
ACTIONS_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
BLANK_RUN = re.compile(r"\n[ \t]*\n[ \t]*\n[ \t]*\n")  # three blank lines in a row


class _AnyTagLoader(yaml.SafeLoader):
    """A safe loader that also accepts application tags such as CloudFormation's ``!Ref``."""


def _construct_tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.MappingNode)
    return loader.construct_mapping(node, deep=True)


_AnyTagLoader.add_multi_constructor("!", _construct_tagged)


def load_yaml_documents(text: str) -> list[object]:
    return list(yaml.load_all(text, Loader=_AnyTagLoader))


def absent_path_problems(combination: Combination, files: list[Path]) -> list[str]:
    patterns: list[str] = []
    for name, value in combination.answers:
        patterns.extend(ABSENT_WHEN.get((name, value), []))
    others = {
        other
        for name, value in combination.answers
        if name in ABSENT_BY_NAME
        for other in axes()[name]
        if other != value
    }
    problems = []
    for file in files:
        path = PurePosixPath(file)
        candidates = [path, *[parent for parent in path.parents if str(parent) != "."]]
        for candidate in candidates:
            hits = [pattern for pattern in patterns if fnmatch.fnmatch(str(candidate), pattern)]
            if hits or candidate.stem in others or candidate.name in others:
                reason = f"matches {hits[0]!r}" if hits else "is named after another answer"
                problems.append(f"{file}: {candidate} must not exist for {combination}: {reason}")
                break
    return problems


def text_problems(project: Path, files: list[Path]) -> list[str]:
    """Leftover template syntax, empty files, stray blank lines and trailing whitespace."""
    problems = []
    for file in files:
        if file.suffix == ".jinja" or TEMPLATE_MARKER.search(str(file)):
            problems.append(f"{file}: the file name still carries template syntax")
        data = (project / file).read_bytes()
        if b"\0" in data:
            continue  # binary
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{file}: not UTF-8")
            continue
        if not text.strip():
            problems.append(f"{file}: empty")
            continue
        if "\r" in text:
            problems.append(f"{file}: has carriage returns (CRLF line endings)")
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            if TEMPLATE_MARKER.search(ACTIONS_EXPRESSION.sub("", line)):
                problems.append(f"{file}:{number}: leftover template syntax: {line.strip()!r}")
            if line != line.rstrip():
                problems.append(f"{file}:{number}: trailing whitespace")
        if match := BLANK_RUN.search(text):
            number = text.count("\n", 0, match.start()) + 2
            problems.append(f"{file}:{number}: three or more blank lines in a row")
        if text.startswith(("\n", " \n")):
            problems.append(f"{file}:1: starts with a blank line")
        if not text.endswith("\n"):
            problems.append(f"{file}: does not end with a newline")
        elif text.endswith("\n\n"):
            problems.append(f"{file}: ends with blank lines")
    return problems


def data_file_problems(project: Path, files: list[Path]) -> list[str]:
    """Every YAML, JSON and TOML file parses."""
    problems = []
    for file in files:
        suffix = file.suffix.lower()
        if suffix not in {".yml", ".yaml", ".json", ".toml"}:
            continue
        text = (project / file).read_text(encoding="utf-8")
        try:
            if suffix in {".yml", ".yaml"}:
                load_yaml_documents(text)
            elif suffix == ".json":
                json.loads(text)
            else:
                tomllib.loads(text)
        except (yaml.YAMLError, ValueError) as error:
            problems.append(f"{file}: does not parse: {error}")
    return problems


# Run with the project's own interpreter (the code may use syntax newer than the test runner's).
_COMPILE_ALL = """
import ast, json, sys, warnings
warnings.simplefilter("error")  # an invalid escape sequence is a SyntaxWarning: count it
problems = []
for name in sys.argv[1:]:
    try:
        source = open(name, encoding="utf-8").read()
        tree = compile(source, name, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        compile(tree, name, "exec", dont_inherit=True)
    except (SyntaxError, SyntaxWarning, ValueError) as error:
        problems.append(f"{name}: does not compile: {error}")
        continue
    if name.endswith("__init__.py") and not ast.get_docstring(tree):
        problems.append(f"{name}: __init__.py has no docstring saying what the package is")
print(json.dumps(problems))
"""


def python_problems(project: Path, files: list[Path], python: Path | str) -> list[str]:
    sources = [str(file) for file in files if file.suffix == ".py"]
    if not sources:
        return ["no Python files were rendered"]
    result = run([python, "-c", _COMPILE_ALL, *sources], cwd=project)
    problems: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return problems


def all_problems(
    combination: Combination, project: Path, files: list[Path], python: Path | str
) -> list[str]:
    return [
        *absent_path_problems(combination, files),
        *text_problems(project, files),
        *data_file_problems(project, files),
        *python_problems(project, files, python),
    ]
