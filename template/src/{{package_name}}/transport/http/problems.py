"""Error responses as RFC 9457 problem details (``application/problem+json``).

Every error the service answers with has the same shape, whoever produced it: a validation
error, a 404 from the router, a full offload queue, a body over the limit, or a bug. The body
names the request id, so a client's report can be matched to the server's log lines, and
never contains internals (exception text, stack traces, the offending input).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ...runtime.context import current_request_id
from ...runtime.offload import OffloadRejected, OffloadTimeout

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}


class InvalidParam(BaseModel):
    """One reason a request was refused as invalid."""

    location: list[str | int] = Field(
        description='Where in the request, e.g. ["body", "customer", "email"].'
    )
    message: str = Field(description="What is wrong with it.")
    type: str = Field(description="A stable identifier of the kind of error.")


class ProblemDetails(BaseModel):
    """An error response (RFC 9457)."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What happened, for a human.")
    request_id: str | None = Field(
        default=None, description="The request's id, also in the x-request-id response header."
    )
    errors: list[InvalidParam] | None = Field(
        default=None, description="For 422: every problem found in the request."
    )


class ProblemResponse(JSONResponse):
    """A JSON response with the problem details media type."""

    media_type = PROBLEM_MEDIA_TYPE


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    errors: list[InvalidParam] | None = None,
) -> ProblemResponse:
    """A problem+json response for ``status``, naming the current request's id."""
    problem = ProblemDetails(
        title=_phrase(status),
        status=status,
        detail=detail,
        request_id=current_request_id(),
        errors=errors,
    )
    return ProblemResponse(problem.model_dump(exclude_none=True), status, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for routes that can answer with these error statuses."""
    return {
        status: {"model": ProblemDetails, "description": _phrase(status)} for status in statuses
    }


def install_problem_handlers(app: FastAPI) -> None:
    """Turn the framework's and the runtime's exceptions into problem+json responses."""
    # Through the decorator, whose typing lets each handler name the exception it handles.
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(OffloadRejected)(_overloaded)
    app.exception_handler(OffloadTimeout)(_timed_out)


async def _http_error(_request: Request, exc: HTTPException) -> ProblemResponse:
    detail: str | None = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if detail == _phrase(exc.status_code):
        detail = None  # starlette's default detail: the title says it already
    return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}))


async def _invalid_request(_request: Request, exc: RequestValidationError) -> ProblemResponse:
    errors = [_invalid_param(error) for error in exc.errors()]
    return problem_response(422, "The request is not valid.", errors=errors)


def _invalid_param(error: dict[str, Any]) -> InvalidParam:
    # Only the location, the message and the type: pydantic's "input" would echo the client's
    # data back (possibly megabytes of it), and "ctx" may hold exception objects.
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid" and isinstance(error.get("ctx"), dict):
        message = f"{message}: {error['ctx'].get('error', '')}".rstrip(": ")
    location = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
    return InvalidParam(location=location, message=message, type=str(error.get("type", "")))


async def _overloaded(_request: Request, exc: OffloadRejected) -> ProblemResponse:
    return problem_response(
        503,
        "The service is at capacity. Retry after the time in the Retry-After header.",
        headers={"retry-after": str(exc.retry_after)},
    )


async def _timed_out(_request: Request, _exc: Exception) -> ProblemResponse:
    return problem_response(503, "The work did not finish within the service's time limit.")


def document_problems(schema: dict[str, Any]) -> None:
    """Correct an OpenAPI schema made by FastAPI to describe the errors this module produces.

    FastAPI documents additional responses as ``application/json`` and adds its own 422
    schema, but the handlers above answer differently. Afterwards every 4xx/5xx response is
    ``ProblemDetails`` as problem+json, every operation may answer 500, and an operation with
    a request body may answer 400 (unparsable body), 413 and 422.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    definitions = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(definitions.pop("$defs", {}))
    components["ProblemDetails"] = definitions
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            statuses = [500]
            if "requestBody" in operation:
                statuses += [400, 413, 422]
            for status in statuses:
                responses.setdefault(str(status), {"description": _phrase(status)})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status code the standard library does not know
        return "Error"
