"""The service's gRPC API: your code. One method per RPC of ``proto/<package>/v1/*.proto``.

Handlers are coroutines on the event loop, so they must not block it: hand anything CPU-bound
or blocking to ``await offload()``, as ``Validate`` does (the stall watchdog names the line
that blocks the loop for longer than the stall threshold). When the offload pool is full,
``offload`` raises ``OffloadRejected`` and the client gets RESOURCE_EXHAUSTED; raise
``InvalidArgumentError`` for a bad request (INVALID_ARGUMENT); anything else becomes INTERNAL with
the request id, and the traceback goes to the log.

After changing the .proto file, run ``uv run python scripts/protos.py`` and register any new
service in :func:`add_services`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from .documents import InvalidDocument, Problem, check_document
from .resources import Resources
from .runtime import current_request_id, offload
from .transport.grpc.errors import InvalidArgumentError
from .v1 import documents_pb2, documents_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class DocumentService(documents_pb2_grpc.DocumentServiceServicer):
    """Validates documents (``proto/.../v1/documents.proto``)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    async def Validate(
        self, request: documents_pb2.ValidateRequest, context: Context
    ) -> documents_pb2.ValidateResponse:
        # The text goes to the worker, which parses it: nothing that grows with the document
        # runs here.
        try:
            problems = await offload(check_document, request.document_json)
        except InvalidDocument as error:
            raise InvalidArgumentError(f"document_json {error}") from None
        self.resources.tally.record(problems)
        return validation_response(problems)

    async def Ping(
        self, request: documents_pb2.PingRequest, context: Context
    ) -> documents_pb2.PingResponse:
        return documents_pb2.PingResponse(request_id=current_request_id() or "")


def validation_response(problems: Sequence[Problem]) -> documents_pb2.ValidateResponse:
    return documents_pb2.ValidateResponse(
        valid=not problems,
        problems=[
            documents_pb2.Problem(path=problem.path, rule=problem.rule, message=problem.message)
            for problem in problems
        ],
    )


def add_services(server: grpc.aio.Server, resources: Resources) -> list[str]:
    """Register this module's servicers on ``server``, sharing ``resources`` (``resources.py``);
    their full names, for health checking.
    """
    documents_pb2_grpc.add_DocumentServiceServicer_to_server(DocumentService(resources), server)
    return [documents_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name]
