"""The request id of the turn being served.

Serve's proxy takes the client's ``X-Request-ID`` header (or makes one), returns it in the
response, and carries it through every handle call; Serve's replica loggers (``ray.serve``)
stamp it on each log line. This module only reads it, for response bodies and stored turns.
"""

from __future__ import annotations

import uuid


def current_request_id() -> str:
    try:
        from ray.serve.context import _get_serve_request_context

        request_id = _get_serve_request_context().request_id
    except Exception:  # outside a replica (unit tests), there is no Serve context
        request_id = ""
    return request_id or uuid.uuid4().hex
