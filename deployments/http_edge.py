"""The HTTP edge every application that answers HTTP shares: the tutor's Ingress and the
emotion application's Emotion. One error shape, and the security middleware in front of the
routes (keys, scopes, rate limits, body limit) with its refusals in that shape."""

from __future__ import annotations

from fastapi import FastAPI

from deployments.errors import ERROR_RESPONSES, error_response, install_error_handlers
from deployments.replica_context import current_request_id
from deployments.security.gate import Refusal
from deployments.security.middleware import SecurityMiddleware


def _refused(refusal: Refusal):
    return error_response(
        refusal.status,
        refusal.message,
        request_id=current_request_id(),
        headers=refusal.headers,
        code=refusal.code,
    )


def guarded_api(*, title: str, description: str, inner_middleware: tuple = ()) -> FastAPI:
    """A FastAPI app whose routes run behind the security middleware (the gate is the
    replica's, installed by its deployment's __init__: deployments/security/middleware.py).
    ``inner_middleware`` runs after the gate, before the routes."""
    api = FastAPI(title=title, version="1", description=description, responses=ERROR_RESPONSES)
    install_error_handlers(api, request_id=current_request_id)
    for middleware in inner_middleware:
        api.add_middleware(middleware)
    # Starlette runs the middleware added last first: keys, scopes, rate limits and the body
    # limit before any route or body parsing.
    api.add_middleware(SecurityMiddleware, respond=_refused)
    return api
