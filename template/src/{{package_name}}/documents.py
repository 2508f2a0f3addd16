"""Document validation: the example business logic of this service. Replace it with yours.

A document is any JSON object. Every string in it, however deeply nested, is checked against
a set of regular expressions: no control characters, no surrounding whitespace, no payment
card numbers or credentials pasted where they do not belong, and well-formed values in fields
whose name says what they hold (``email``, ``url``, ``phone``).

This is exactly the kind of code that freezes an asyncio service: plain synchronous Python
whose cost grows with the input, most of it spent inside the ``re`` module's C code while
holding the GIL. It must never run on the event loop; the endpoints hand the request's raw
bytes to ``offload(check_document, body)``, so parsing runs in the worker too: nothing whose
cost grows with the document runs on the loop, and a worker process receives a flat byte
string (cheap to pickle) instead of a parsed tree of objects (expensive to pickle).
Keep it that way: pure functions of their arguments, with picklable results and exceptions,
so they run the same in a worker thread or a worker process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# A client gets at most this many problems back: enough to fix a document, bounded in size.
MAX_PROBLEMS = 100


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document."""

    path: str
    """Where: a JSON Pointer (RFC 6901) to the offending value, e.g. ``/customer/email``."""
    rule: str
    """Which check failed, a stable identifier clients may match on."""
    message: str
    """What is wrong, for a human. Never repeats the offending value."""


# Checks applied to every string value.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# JSON can smuggle in lone UTF-16 surrogates ("\ud800"): not text, and not encodable as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Clients send whatever they like: a pattern that may start anywhere in a long run of similar
# characters begins with a lookbehind or \b, so each run is scanned once, never once per start.
_CARD_NUMBER_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_CREDENTIALS = {
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "a GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "a Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "a JSON Web Token": re.compile(r"(?<![\w-])eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}"),
    "a password in a URL": re.compile(
        r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE
    ),
}

# Checks applied to the values of fields whose name ends with the key, e.g. ``billing_email``.
_FIELD_FORMATS = {
    "email": (
        re.compile(
            r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
        ),
        "is not an e-mail address",
    ),
    "url": (re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE), "is not an http(s) URL"),
    "phone": (re.compile(r"\+[1-9][0-9]{6,14}"), "is not a phone number in E.164 form"),
}


class InvalidDocument(ValueError):  # noqa: N818 - named for what the input is
    """The input is not a JSON object; the message says what is wrong, never echoing it."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message, kind)  # both in args: the exception pickles to the caller
        self.message = message
        self.kind = kind
        """``json_invalid`` (not parsable) or ``dict_type`` (JSON, but not an object)."""

    def __str__(self) -> str:
        return self.message


def parse_document(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in ``raw`` (UTF-8/16/32 bytes or text), or :class:`InvalidDocument`."""
    try:
        document = json.loads(raw)
    except RecursionError:
        raise InvalidDocument("is nested too deeply to parse", "json_invalid") from None
    except ValueError as error:  # not JSON, or bytes that are not UTF-8/16/32
        raise InvalidDocument(f"is not valid JSON: {error}", "json_invalid") from None
    if not isinstance(document, dict):
        raise InvalidDocument('must be a JSON object, e.g. {"name": "Ada"}', "dict_type")
    return document


def check_document(raw: bytes | str) -> list[Problem]:
    """Parse ``raw`` and validate it: the whole job, for one ``offload()`` call."""
    return validate_document(parse_document(raw))


def validate_document(document: dict[str, Any]) -> list[Problem]:
    """Every problem found in ``document`` (at most :data:`MAX_PROBLEMS`), in document order."""
    problems: list[Problem] = []
    for path, key, value in _strings(document):
        problems.extend(_check_string(path, key, value))
        if len(problems) >= MAX_PROBLEMS:
            return problems[:MAX_PROBLEMS]
    return problems


def _strings(document: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(json_pointer, field_name, string)`` for every string in ``document``, in order.

    Iterative rather than recursive: a deeply nested document costs memory, not the stack.
    """
    pending: list[tuple[str, str, Any]] = [("", "", document)]
    while pending:
        path, key, value = pending.pop()
        if isinstance(value, str):
            yield path, key, value
        elif isinstance(value, dict):
            children = [(f"{path}/{_escape_pointer(str(k))}", str(k), v) for k, v in value.items()]
            pending.extend(reversed(children))
        elif isinstance(value, list):
            pending.extend(reversed([(f"{path}/{i}", key, v) for i, v in enumerate(value)]))


def _escape_pointer(token: str) -> str:
    # A lone surrogate in a key would make the answer unencodable: show U+FFFD instead.
    return _SURROGATE.sub("\ufffd", token).replace("~", "~0").replace("/", "~1")


def _check_string(path: str, key: str, value: str) -> Iterator[Problem]:
    if _CONTROL_CHARACTER.search(value):
        yield Problem(path, "control-character", "contains a control character")
    if _SURROGATE.search(value):
        yield Problem(path, "invalid-unicode", "contains a lone UTF-16 surrogate: not text")
    if value[:1].isspace() or value[-1:].isspace():
        yield Problem(path, "surrounding-whitespace", "starts or ends with whitespace")
    for candidate in _CARD_NUMBER_CANDIDATE.finditer(value):
        if _passes_luhn(candidate.group()):
            yield Problem(path, "card-number", "contains what looks like a payment card number")
            break
    for what, pattern in _CREDENTIALS.items():
        if pattern.search(value):
            yield Problem(path, "credential", f"contains what looks like {what}")
    lowered = key.lower()
    for suffix, (pattern, complaint) in _FIELD_FORMATS.items():
        if lowered.endswith(suffix) and not pattern.fullmatch(value):
            yield Problem(path, f"{suffix}-format", complaint)


def _passes_luhn(candidate: str) -> bool:
    """The Luhn checksum every payment card number satisfies (and most random digits do not)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if position % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0
