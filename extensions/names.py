"""Jinja filters that validate and derive names for copier.yml.

Each ``*_problem`` filter returns an empty string for a good answer, or one sentence that
says what is wrong and what is allowed: copier shows that sentence and asks again (or, with
``--defaults``/``--data``, stops before writing anything).
"""

from __future__ import annotations

import keyword
import re
import unicodedata

from jinja2 import Environment
from jinja2.ext import Extension

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Top-level modules the generated service (or its tests and tools) imports. A package with one
# of these names would shadow it and break the service in confusing ways.
SHADOWED_MODULES = frozenset(
    {
        "asyncio", "collections", "concurrent", "contextvars", "dataclasses", "enum",
        "faulthandler", "functools", "http", "io", "json", "logging", "multiprocessing", "os",
        "pathlib", "queue", "re", "secrets", "signal", "socket", "ssl", "string", "sys",
        "tempfile", "test", "tests", "threading", "time", "types", "typing", "uuid",
        "anyio", "fastapi", "google", "grpc", "grpc_health", "grpc_reflection", "grpc_tools",
        "httptools", "httpx", "hypothesis", "mypy", "prometheus_client", "pydantic",
        "pydantic_settings", "pytest", "starlette", "structlog", "uvicorn", "uvloop",
        "scripts", "src",
    }
)


def slugify(value: str) -> str:
    """'Invoice Validator (v2)' -> 'invoice-validator-v2'; '' when nothing ASCII is left."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = "-".join(words)
    return re.sub(r"^[0-9-]+", "", slug)


def project_name_problem(value: str) -> str:
    if not value.strip():
        return "The project name must not be empty."
    if not slugify(value):
        return (
            f"The project name {value!r} has no ASCII letters to build a package name from; "
            "use a name with at least one letter a-z (unicode is fine in the description)."
        )
    return ""


def slug_problem(value: str) -> str:
    if SLUG_RE.fullmatch(value):
        return ""
    return (
        f"The project slug {value!r} is not allowed: use lowercase letters a-z, digits and single "
        "dashes, starting with a letter (e.g. 'invoice-validator')."
    )


def package_name_problem(value: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        return (
            f"The package name {value!r} is not allowed: use lowercase letters a-z, digits and "
            "underscores, starting with a letter (e.g. 'invoice_validator')."
        )
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return f"The package name {value!r} is a Python keyword; choose another name."
    if value in SHADOWED_MODULES:
        return (
            f"The package name {value!r} would shadow the module of the same name that the "
            "service imports; choose a more specific name (e.g. 'my_{value}')."
        )
    return ""


def email_problem(value: str) -> str:
    if EMAIL_RE.fullmatch(value):
        return ""
    return f"The e-mail address {value!r} is not valid: expected something like 'jane@example.com'."


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
        return f"The port {port} is already the service port; the two ports must differ."
    return ""


def range_problem(value: object, low: int, high: int, unit: str) -> str:
    try:
        number = int(str(value))
    except ValueError:
        return f"{value!r} is not a whole number: use {low} to {high} {unit}."
    if not low <= number <= high:
        return f"{number} is out of range: use {low} to {high} {unit}."
    return ""


class NamesExtension(Extension):
    """Registers the filters above with copier's Jinja environment."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(
            slugify=slugify,
            project_name_problem=project_name_problem,
            slug_problem=slug_problem,
            package_name_problem=package_name_problem,
            email_problem=email_problem,
            port_problem=port_problem,
            range_problem=range_problem,
        )
