"""Rendering is strict, and metadata full of quotes, backslashes and unicode renders validly."""

from __future__ import annotations

import ast
import shutil
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import yaml
from combinations import (
    COPIER_YML,
    Combination,
    asked_questions,
    choice_values,
    covering_set,
    questions,
)
from hygiene import data_file_problems, python_problems, text_problems
from support import git, own_checks, project_files, render, run, tail, tool_env

# Names copier itself puts into the rendering context.
COPIER_CONTEXT = {
    "_copier_answers",
    "_copier_conf",
    "_copier_operation",
    "_copier_phase",
    "_copier_python",
    "_folder_name",
}


def test_undefined_variables_are_errors_in_the_settings() -> None:
    settings = yaml.safe_load(COPIER_YML.read_text(encoding="utf-8"))
    assert settings["_envops"]["undefined"] == "jinja2.StrictUndefined"


def test_an_undefined_variable_fails_rendering_and_leaves_nothing(
    template: Path, tmp_path: Path
) -> None:
    """A typo in a template is an error, never an empty string in the generated code."""
    scratch = tmp_path / "template"
    shutil.copytree(template, scratch)
    (scratch / "template" / "typo.txt.jinja").write_text("port = {{ prot }}\n", encoding="utf-8")
    git("add", "--all", cwd=scratch)
    git("commit", "--quiet", "-m", "A template with a typo", cwd=scratch)
    destination = tmp_path / "out"
    with pytest.raises(jinja2.exceptions.UndefinedError, match="'prot' is undefined"):
        render(scratch, destination, {})
    assert not destination.exists(), "a failed render left a half-written project behind"


def template_sources(root: Path) -> dict[str, str]:
    """Every piece of Jinja in the template: .jinja files, templated paths, copier.yml strings."""
    sources: dict[str, str] = {}
    for path in sorted((root / "template").rglob("*")):
        relative = str(path.relative_to(root / "template"))
        if "{" in relative:
            sources[f"path {relative}"] = relative
        if path.is_file() and path.suffix == ".jinja":
            sources[relative] = path.read_text(encoding="utf-8")

    def strings(value: object, where: str) -> None:
        if isinstance(value, str) and "{" in value:
            sources[f"copier.yml {where}"] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                strings(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                strings(item, f"{where}[{index}]")

    strings(yaml.safe_load((root / "copier.yml").read_text(encoding="utf-8")), "")
    return sources


def test_every_variable_the_template_uses_is_a_question(template: Path) -> None:
    """Catches a misspelt variable even in a branch no combination renders."""
    from copier._jinja_ext import YieldExtension

    # The same extensions copier loads: its own, Ansible's filters and the template's.
    sys.path.insert(0, str(template / "extensions"))
    from names import NamesExtension
    from setup import SetupExtension

    environment = jinja2.Environment(
        extensions=[
            "jinja2_ansible_filters.AnsibleCoreFiltersExtension",
            YieldExtension,
            NamesExtension,
            SetupExtension,
        ],
        autoescape=False,
    )
    known = set(questions()) | COPIER_CONTEXT
    unknown = {}
    for where, source in template_sources(template).items():
        try:
            used = jinja2.meta.find_undeclared_variables(environment.parse(source))
        except jinja2.TemplateSyntaxError as error:
            unknown[where] = f"syntax error: {error}"
            continue
        if missing := used - known:
            unknown[where] = ", ".join(sorted(missing))
    assert not unknown, "\n".join(f"{where}: {names}" for where, names in unknown.items())


def test_plain_python_files_are_rendered_as_they_are(
    template: Path, rendered: Callable[[Combination], Path]
) -> None:
    """A template ``.py`` file without Jinja is the code it renders, byte for byte: the
    post-generation ``ruff format`` changes nothing in it, so what a reader of the template
    sees is what the generated project holds."""
    changed = []
    for combination in covering_set():
        project = rendered(combination)
        package = next(p.name for p in (project / "src").iterdir() if (p / "runtime").is_dir())
        for source in sorted((template / "template").rglob("*.py")):
            relative = source.relative_to(template / "template").as_posix()
            target = project / relative.replace("{{package_name}}", package)
            if target.is_file() and target.read_bytes() != source.read_bytes():
                changed.append(f"{combination}: {relative}")
    assert not changed, "rewritten by rendering or formatting:\n" + "\n".join(changed)


# --- Hostile but valid metadata ----------------------------------------------------------------

HOSTILE = {
    "project_name": 'Zoë\'s "Quoted" \\ Service',
    "description": (
        "Checks \"documents\" under C:\\data\\ and 'quotes' — ünïcode ✓; # not a comment: "
        'yes, {braces} and a trailing quote"'
    ),
    "author_name": 'Seán O\'Brien-Müller "the \\ dev"',
    "author_email": "o'brien+svc@example.com",
}


@pytest.mark.parametrize("transport", choice_values("transport"))
def test_hostile_metadata_renders_valid_files(
    transport: str, template: Path, tmp_path: Path, shared_venv: Path, worker_cache: Path
) -> None:
    project = tmp_path / "svc"
    render(template, project, {**HOSTILE, "transport": transport})
    files = project_files(project)

    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == HOSTILE["description"]
    assert pyproject["project"]["authors"] == [
        {"name": HOSTILE["author_name"], "email": HOSTILE["author_email"]}
    ]
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert {name: answers[name] for name in HOSTILE} == HOSTILE
    assert answers["package_name"] == "zoe_s_quoted_service"

    problems = [
        *text_problems(project, files),
        *data_file_problems(project, files),
        *python_problems(project, files, shared_venv / "bin" / "python"),
    ]
    assert not problems, "\n".join(problems)
    package = project / "src" / answers["package_name"] / "__init__.py"
    docstring = ast.get_docstring(ast.parse(package.read_text(encoding="utf-8"))) or ""
    assert docstring.split() == HOSTILE["description"].split(), "the docstring mangled it"

    env = tool_env(shared_venv, mypy_cache=worker_cache)
    for check in ("ruff check", "ruff format"):
        result = run(
            own_checks(shared_venv, worker_cache)[check], cwd=project, env=env, check=False
        )
        assert result.returncode == 0, f"{check} with hostile metadata:\n{tail(result.stdout)}"


def test_every_asked_question_has_help() -> None:
    """A newcomer sees what each question means before answering it."""
    missing = [name for name, spec in asked_questions().items() if not spec.get("help")]
    assert not missing, f"questions without help text: {missing}"


@pytest.mark.parametrize(
    "text",
    [
        'ends with a quote"',
        'three """ quotes and """" four',
        "a backslash at the end \\",
        "C:\\path\\n is not a newline",
        '"',
        "a long line " * 12 + 'that ends "quoted"',
    ],
)
def test_docstring_filter_reads_back_exactly(template: Path, text: str) -> None:
    """The filter the template uses to put free text into a docstring."""
    sys.path.insert(0, str(template / "extensions"))
    from names import docstring

    literal = f'"""{docstring(text)}"""'
    assert ast.literal_eval(literal).split() == text.split()
    assert max(len(line) for line in literal.splitlines()) <= 100


def test_py_string_filter_reads_back_and_fits_once_formatted(
    template: Path, tmp_path: Path, shared_venv: Path, worker_cache: Path
) -> None:
    """The filter the template uses to put free text into Python string literals.

    Layout is ruff format's job (the post-generation hook runs it); the filter only makes a
    literal that reads back exactly, in pieces that ruff can put on lines of 100 columns.
    """
    sys.path.insert(0, str(template / "extensions"))
    from names import py_string

    texts = [*HOSTILE.values(), "plain", 'only "double" here', "word " * 40, "x" * 120, "a\tb\nc"]
    lines = []
    for index, text in enumerate(texts):
        lines.append(f"V{index} = {py_string(text)}\n\n")
        lines.append(f"\ndef f{index}() -> object:\n    return dict(\n")
        lines.append(f"        description={py_string(text)},\n    )\n\n\n")
    module = tmp_path / "strings.py"
    module.write_text("".join(lines).rstrip() + "\n", encoding="utf-8")
    env = tool_env(shared_venv, mypy_cache=worker_cache)
    ruff = [shared_venv / "bin" / "ruff", "format", "--no-cache", "--line-length=100", module]
    run(ruff, cwd=tmp_path, env=env)
    formatted = module.read_text(encoding="utf-8")
    namespace: dict[str, object] = {}
    exec(compile(formatted, str(module), "exec"), namespace)
    for index, text in enumerate(texts):
        assert namespace[f"V{index}"] == text
    # Too long only when the text has no space to split at (ruff leaves such a string whole).
    too_long = [
        line for line in formatted.splitlines() if len(line) > 100 and " " in line.partition('"')[2]
    ]
    assert not too_long, "\n".join(too_long)
