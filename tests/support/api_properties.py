"""The API's property test, shared by the modules that start an app (auth off and on)."""

from __future__ import annotations

import hypothesis
import schemathesis

# Each application's API description, and its documented routes and methods: a new one must be
# counted here. The tutor's, and the emotion application's (POST /v1/emotion).
OPERATIONS = {"/openapi.json": 7, "/v1/emotion/openapi.json": 1}


def check_generated_requests(
    base_url: str, *, headers: dict[str, str] | None = None, max_examples: int = 30
) -> None:
    """Requests generated from each OpenAPI schema get a documented status and content type,
    schema-valid ones are accepted and invalid ones refused, and none is a 5xx."""
    for document, count in OPERATIONS.items():
        _check_schema(f"{base_url}{document}", count, headers, max_examples)


def _check_schema(url: str, count: int, headers: dict[str, str] | None, max_examples: int) -> None:
    schema = schemathesis.openapi.from_url(url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == count, url

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
