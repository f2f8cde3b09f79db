"""A pure ASGI middleware in front of the routes: it runs before the body is read or parsed.

In order: a declared body past ``max_body_bytes`` is a 413 at once; then the key (401/403),
the key's requests per minute (429); then the body is read, counting a chunked one as it
streams in (413 once past the limit, without parsing it); then the key's concurrent turns
(429), held until the response, a stream included, has ended. Every refusal is in the API's
one error shape. The caller (``tenancy.Principal``) is handed to routes in
``scope["state"]["principal"]``.

Why a module-level gate: ``serve.ingress`` freezes a copy of the FastAPI app (middleware and
its arguments included) when the class is decorated, so the middleware cannot be handed the
replica's objects; the Ingress installs its ``Gate`` here when it starts (one Ingress replica
per process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from deployments.security.gate import Gate, Refusal
from deployments.security.tenancy import Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Respond = Callable[[Refusal], ASGIApp]

_gate: Gate | None = None


def install_gate(gate: Gate | None) -> None:
    global _gate
    _gate = gate


def current_gate() -> Gate | None:
    return _gate


def principal_of(scope: Scope) -> Principal | None:
    """The caller the middleware admitted (None: auth off or an open route)."""
    return scope.get("state", {}).get("principal")


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        respond: Respond,
        gate: Callable[[], Gate | None] = current_gate,
    ) -> None:
        """``respond``: a refusal as an ASGI response in the API's error shape."""
        self.app = app
        self._respond = respond
        self._gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate = self._gate()
        try:
            if gate is None:  # fail closed: no route runs unguarded
                raise Refusal(503, "unavailable", "the ingress is starting", {"Retry-After": "1"})
            headers = _headers(scope)
            gate.check_declared_length(headers.get("content-length"))
            principal = await gate.admit(scope["path"], headers.get("authorization"))
            if principal is not None:
                scope.setdefault("state", {})["principal"] = principal
            if "content-length" in headers or "transfer-encoding" in headers:
                receive = await _read_body(receive, gate)
            held = contextlib.ExitStack()
            held.enter_context(gate.turn_slot(principal, scope["path"]))
        except Refusal as refusal:
            await self._respond(refusal)(scope, receive, send)
            return
        with held:
            await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    # latin-1: HTTP header bytes as they came (ASGI's own convention).
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def _read_body(receive: Receive, gate: Gate) -> Receive:
    """The whole body, counted as it streams in (a Refusal past the limit), and a receive
    that hands it to the app as one message before passing on the server's next ones (a
    disconnect)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see it
            first: Message | None = message
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > gate.settings.max_body_bytes:
            raise gate.too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break

    async def replay() -> Message:
        nonlocal first
        if first is not None:
            message, first = first, None
            return message
        return await receive()

    return replay
