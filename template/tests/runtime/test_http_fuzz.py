"""Property-based fuzzing of the running service from its own OpenAPI schema.

schemathesis generates requests for every documented operation, valid and invalid ones, and
checks each answer against the schema: no 5xx, and every status code, content type, header
and body as documented. It proves the OpenAPI schema accurate and the input handling robust.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Err

from conftest import ServiceProcess
from http_support import start_http

EXAMPLES_PER_OPERATION = 25


def test_every_documented_operation_answers_as_documented(
    start_service: Callable[..., ServiceProcess],
) -> None:
    # A generous queue: the property under test is the answers, not load shedding.
    service = start_http(start_service, offload_queue=64, log_level="warning")
    schema = schemathesis.openapi.from_url(service.base_url + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    assert {op.path for op in operations} >= {"/v1/documents:validate", "/v1/ping", "/readyz"}

    for operation in operations:
        takes_input = "requestBody" in operation.definition.raw or operation.definition.raw.get(
            "parameters"
        )
        # Invalid requests only exist for an operation that takes some input.
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if takes_input else [])
        for mode in modes:

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def answers_as_documented(case: Case[Any]) -> None:
                case.call_and_validate(base_url=service.base_url)

            answers_as_documented()

    assert not service.events("request_failed"), "a request failed inside the service"
