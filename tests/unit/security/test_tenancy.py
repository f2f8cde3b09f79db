"""Tenants' namespaces of learner ids."""

from __future__ import annotations

import json

from deployments.security.tenancy import (
    Principal,
    owns,
    scope_learner,
    unscope_events,
    unscope_learner,
)


def _principal(tenant: str | None) -> Principal:
    return Principal(
        name="k", tenant=tenant, scopes=frozenset({"tutor"}), rpm=1, max_concurrent_turns=1
    )


A, B, NONE = _principal("a"), _principal("b"), _principal(None)


def test_a_tenant_key_stores_its_learners_under_its_tenant():
    assert scope_learner(A, "bob") == "a/bob"
    assert unscope_learner(A, "a/bob") == "bob"
    assert scope_learner(NONE, "bob") == "bob" == scope_learner(None, "bob")
    assert unscope_learner(None, "bob") == "bob"


def test_each_namespace_owns_only_its_own_learners():
    assert owns(A, "a/bob") and not owns(A, "b/bob") and not owns(A, "bob")
    assert owns(NONE, "bob") and owns(None, "bob")
    assert not owns(NONE, "a/bob") and not owns(None, "a/bob")
    assert not owns(A, "a/b/bob")  # never produced; refused all the same


async def _events(*events: str):
    for event in events:
        yield event


async def test_the_stream_summary_shows_the_clients_learner_id():
    summary = f"event: summary\ndata: {json.dumps({'learner_id': 'a/bob', 'reply': 'hi'})}\n\n"
    token = 'event: token\ndata: {"text": "a/bob"}\n\n'  # not a learner id: left as is
    shown = [e async for e in unscope_events(A, _events(token, summary))]
    assert shown[0] == token
    assert json.loads(shown[1].split("data: ", 1)[1]) == {"learner_id": "bob", "reply": "hi"}
    assert shown[1].startswith("event: summary\n") and shown[1].endswith("\n\n")
