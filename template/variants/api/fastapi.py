"""The service's HTTP endpoints: your code. Add your routes to ``router``.

Handlers run on the event loop, so they must not block it: hand anything CPU-bound or
blocking to ``offload()``, as ``validate`` does. When the offload pool is full, ``offload``
raises ``OffloadRejected`` and the client gets 503 with Retry-After; other errors become
problem+json responses too (see ``transport/http/problems.py``). What handlers share (clients,
pools, caches) is opened in ``resources.py``; a handler asks for it with ``Depends``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field

from .documents import Problem, validate_document
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


@router.post(
    "/documents:validate",
    tags=["documents"],
    responses=problem_responses(503),
    summary="Validate a JSON document",
)
async def validate(
    document: Annotated[
        dict[str, Any],
        Body(examples=[{"name": "Ada", "email": "ada@example.com"}]),
    ],
    resources: Annotated[Resources, Depends(shared_resources)],
) -> ValidationReport:
    """Check every string in the document; the answer lists what is wrong with it.

    The check is CPU-bound and its cost grows with the document, so it runs in the offload
    pool, never on the event loop.
    """
    problems = await offload(validate_document, document)
    resources.tally.record(problems)
    return ValidationReport(valid=not problems, problems=problems)


@router.get("/ping", tags=["service"], summary="Answer at once")
async def ping() -> Pong:
    """Does no work: a cheap way to see that the service answers."""
    return Pong()
