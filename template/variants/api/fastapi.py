"""The service's HTTP endpoints: your code. Add your routes to ``router``.

Handlers run on the event loop, so they must not block it: hand anything CPU-bound or
blocking to ``offload()``, as ``validate`` does. When the offload pool is full, ``offload``
raises ``OffloadRejected`` and the client gets 503 with Retry-After; other errors become
problem+json responses too (see ``transport/http/problems.py``). What handlers share (clients,
pools, caches) is opened in ``resources.py``; a handler asks for it with ``Depends``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from .documents import InvalidDocument, Problem, check_document
from .resources import Resources
from .runtime import offload
from .transport.http.dependencies import shared_resources
from .transport.http.problems import problem_responses

router = APIRouter(prefix="/v1")


class ValidationReport(BaseModel):
    """The outcome of validating one document."""

    valid: bool = Field(description="True when no problem was found.")
    problems: list[Problem] = Field(description="What is wrong, in document order.")


class Pong(BaseModel):
    message: str = "pong"


# The body is read as bytes, not declared as a parameter: FastAPI would parse the JSON on the
# event loop. This documents it in the OpenAPI schema instead.
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": {"name": "Ada", "email": "ada@example.com"},
            }
        },
    }
}


@router.post(
    "/documents:validate",
    tags=["documents"],
    responses=problem_responses(503),
    summary="Validate a JSON document",
    openapi_extra=DOCUMENT_BODY,
)
async def validate(
    request: Request, resources: Annotated[Resources, Depends(shared_resources)]
) -> ValidationReport:
    """Check every string in the document; the answer lists what is wrong with it.

    Parsing and checking both cost time that grows with the document, so the raw bytes go to
    the offload pool and both happen there; the event loop only moves bytes.
    """
    content_type = request.headers.get("content-type", "application/json")
    if not _is_json(content_type):
        raise _invalid_body("the body must be JSON (content-type: application/json)", "json_type")
    try:
        problems = await offload(check_document, await request.body())
    except InvalidDocument as error:
        raise _invalid_body(f"the body {error}", error.kind) from None
    resources.tally.record(problems)
    return ValidationReport(valid=not problems, problems=problems)


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _invalid_body(message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": message, "type": kind}])


@router.get("/ping", tags=["service"], summary="Answer at once")
async def ping() -> Pong:
    """Does no work: a cheap way to see that the service answers."""
    return Pong()
