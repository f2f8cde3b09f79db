"""The API's property test, shared by the modules that start an app (auth off and on)."""

from __future__ import annotations

import hypothesis
import schemathesis

OPERATIONS = 8  # every documented route and method: a new one must be counted here


def check_generated_requests(
    base_url: str, *, headers: dict[str, str] | None = None, max_examples: int = 30
) -> None:
    """Requests generated from the OpenAPI schema get a documented status and content type,
    schema-valid ones are accepted and invalid ones refused, and none is a 5xx."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == OPERATIONS

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case):
            case.call_and_validate(headers=headers, timeout=30)

        check()
