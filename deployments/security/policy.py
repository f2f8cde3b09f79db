"""Which scope each route needs, and whether auth is on (``TUTOR_AUTH`` and the proxy's host)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

AuthMode = Literal["auto", "required", "off"]

# Open without a key: liveness/readiness probes (Kubernetes, HAProxy, a load balancer) cannot
# carry a key, and the API's description holds no data. /healthz shows versions and health,
# never learners.
_DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
# The emotion application (route prefix /v1/emotion) has its own API description.
OPEN_PATHS = frozenset({"/healthz", *_DOCS, *(f"/v1/emotion{path}" for path in _DOCS)})

# (path pattern, scope). Anything not here and not open needs `admin`: a route added later is
# denied by default until someone decides who may call it.
ROUTE_SCOPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/v1/(tutor|chat/completions|models|emotion|difficulty|feedback)/?$"), "tutor"),
    (re.compile(r"^/v1/learners/[^/]+/?$"), "learners:read"),
)
ADMIN = "admin"
# Routes whose requests are tutoring turns (held against a key's max_concurrent_turns).
TURN_PATHS = frozenset({"/v1/tutor", "/v1/chat/completions"})


def required_scope(path: str) -> str | None:
    """The scope a request to ``path`` needs; None when the path is open."""
    if path in OPEN_PATHS:
        return None
    for pattern, scope in ROUTE_SCOPES:
        if pattern.match(path):
            return scope
    return ADMIN


def is_turn(path: str) -> bool:
    return path.rstrip("/") in TURN_PATHS


class AuthConfigError(ValueError):
    """Auth off where the proxy is reachable from other machines: refuse to start."""


def is_loopback(host: str | None) -> bool:
    """Whether a bind address only accepts connections from this machine. None (unknown),
    0.0.0.0, :: and hostnames other than localhost are not."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to any interface


def auth_enabled(mode: AuthMode, proxy_host: str | None) -> bool:
    """``required``: on. ``auto`` (default): off only while the proxy binds a loopback
    address, on everywhere else (an unknown host counts as not loopback). ``off``: off, and
    refused (AuthConfigError) unless the proxy binds a loopback address."""
    if mode == "required":
        return True
    if is_loopback(proxy_host):
        return False
    if mode == "off":
        raise AuthConfigError(
            f"TUTOR_AUTH=off but the Serve proxy binds {proxy_host or 'an unknown address'}, "
            "which is not loopback: anyone who reaches the port could read every learner. "
            "Bind http_options.host to 127.0.0.1, or unset TUTOR_AUTH (auth on) and create "
            "keys with `tutor keys create`."
        )
    return True
