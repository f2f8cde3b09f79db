"""Tenants: a tenant-bound key reads and writes only its tenant's learners and turns.

Learner ids are scoped at the Ingress boundary: a key bound to tenant ``t`` stores learner
``bob`` as ``t/bob``; a key without a tenant (and auth off) stores ``bob`` as is. The API's
learner ids cannot contain "/" (their schema pattern), so the namespaces never meet: tenant
``t``'s ``bob`` and the untenanted ``bob`` are two learners, and no id a client can send
reaches another namespace. Responses show the client's own id (the prefix stripped). A turn
belongs to the namespace of its learner, so feedback to another namespace's turn is "unknown".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

SEPARATOR = "/"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, its tenant and scopes (handed to routes)."""

    name: str
    tenant: str | None
    scopes: frozenset[str]
    rpm: int
    max_concurrent_turns: int


def scope_learner(principal: Principal | None, learner_id: str) -> str:
    """The stored id of the client's ``learner_id``."""
    if principal is None or principal.tenant is None:
        return learner_id
    return f"{principal.tenant}{SEPARATOR}{learner_id}"


def unscope_learner(principal: Principal | None, stored_id: str) -> str:
    """The client's id of a stored learner id of its own namespace."""
    if principal is None or principal.tenant is None:
        return stored_id
    return stored_id.removeprefix(f"{principal.tenant}{SEPARATOR}")


def owns(principal: Principal | None, stored_learner_id: str) -> bool:
    """Whether a stored learner (or a turn of it) is in the caller's namespace."""
    if principal is None or principal.tenant is None:
        return SEPARATOR not in stored_learner_id
    tenant, sep, rest = stored_learner_id.partition(SEPARATOR)
    return bool(sep) and tenant == principal.tenant and SEPARATOR not in rest


async def unscope_events(
    principal: Principal | None, events: AsyncIterator[str]
) -> AsyncIterator[str]:
    """A /v1/tutor event stream with its ``summary`` event's learner_id shown as the client's
    (the only event that names the learner)."""
    async for event in events:
        if principal is not None and principal.tenant and event.startswith("event: summary\n"):
            head, _, data = event.partition("data: ")
            body = json.loads(data)
            body["learner_id"] = unscope_learner(principal, body["learner_id"])
            event = f"{head}data: {json.dumps(body)}\n\n"
        yield event
