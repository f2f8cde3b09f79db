"""Serve's own deploy path, as `serve deploy` and `serve status` use it: the dashboard's REST
API through ``ServeSubmissionClient``. The only module of the command that imports Ray.

Token authentication: Ray 2.60 turns token auth on for a local cluster started without
RAY_AUTH_MODE (``ray.init`` under `serve run`, i.e. `make serve`) and keeps the token in
~/.ray/auth_token, but `serve deploy` run from another shell does not know auth is on and
sends no token ("Missing authentication token"). ``ray.init`` and `ray start` solve the same
problem with ``maybe_enable_token_auth_if_token_available``: with RAY_AUTH_MODE unset and a
token on disk, token mode is switched on for this process, and the dashboard SDK then adds the
token to every request (``get_auth_headers_if_auth_enabled``). We call that function too, for a
dashboard on this machine only: like ``ray.init`` with an explicit address, the local token is
never sent to another host unless RAY_AUTH_MODE=token says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlparse

from deployments.cli.errors import (
    ApplyError,
    ApplyTimeoutError,
    DeployFailedError,
    RefusedError,
)

ADDRESS_ENV = "RAY_DASHBOARD_ADDRESS"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class ServeClient(Protocol):
    """What the command needs of ``ServeSubmissionClient`` (tests pass a fake)."""

    def deploy_applications(self, config: dict[str, Any]) -> None: ...

    def get_serve_details(self) -> dict[str, Any]: ...


def default_address() -> str:
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def enable_local_token_auth(address: str) -> bool:
    """Turn token auth on for this process when Ray would for a local cluster; True when on."""
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"  # the user said so: respected, as Ray does
    if urlparse(address).hostname not in _LOOPBACK:
        return False
    from ray._private.authentication import authentication_token_setup as token_setup

    # It warns that "token authentication is enabled for this Ray cluster", meant for the
    # process that starts a cluster; from a client that line is noise.
    token_logger = logging.getLogger(token_setup.__name__)
    level = token_logger.level
    token_logger.setLevel(logging.ERROR)
    try:
        return token_setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        token_logger.setLevel(level)


def connect(address: str) -> ServeClient:
    """A client of the dashboard at ``address`` (token auth as explained above)."""
    enable_local_token_auth(address)
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    try:
        return ServeSubmissionClient(address)
    except (ConnectionError, ValueError) as exc:
        raise ApplyError(
            f"cannot reach the Ray dashboard at {address}: {_first_line(exc)}"
        ) from None


def validate_deploy_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as `serve deploy` sends it: validated by Serve's schema, unset fields out."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        return ServeDeploySchema.model_validate(config).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise RefusedError(f"Serve would refuse the config: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def live_user_configs(details: dict[str, Any], app: str) -> dict[str, dict[str, Any]] | None:
    """Each deployment's user_config as the running application has it; None: no such app."""
    found = (details.get("applications") or {}).get(app)
    if found is None:
        return None
    return {
        name: (d.get("deployment_config") or {}).get("user_config") or {}
        for name, d in (found.get("deployments") or {}).items()
    }


def app_status(details: dict[str, Any], app: str) -> tuple[str, str]:
    found = (details.get("applications") or {}).get(app) or {}
    return str(found.get("status", "NOT_STARTED")), str(found.get("message", ""))


def deployment_status(details: dict[str, Any], app: str, deployment: str) -> str:
    found = (details.get("applications") or {}).get(app) or {}
    entry = (found.get("deployments") or {}).get(deployment)
    if entry is None:
        return "NOT_RUNNING"
    message = (entry.get("message") or "").strip()
    status = str(entry.get("status", "UNKNOWN"))
    return f"{status}: {message.splitlines()[0]}" if message else status


def wait_applied(
    client: ServeClient,
    *,
    app: str,
    deployment: str,
    user_config: dict[str, Any],
    timeout_s: float,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Until the app is RUNNING and ``deployment`` is healthy with ``user_config``.

    The user_config is compared too: right after the request the controller may still report
    the old target as RUNNING. Raises DeployFailedError or ApplyTimeoutError."""
    deadline = clock() + timeout_s
    last = "no answer yet"
    while True:
        try:
            details = client.get_serve_details()
        except Exception as exc:  # a dashboard hiccup during the rollout: try again
            last = f"dashboard: {_first_line(exc)}"
        else:
            status, message = app_status(details, app)
            found = (details.get("applications") or {}).get(app) or {}
            entry = (found.get("deployments") or {}).get(deployment) or {}
            live = (entry.get("deployment_config") or {}).get("user_config")
            if status == "DEPLOY_FAILED" or entry.get("status") == "DEPLOY_FAILED":
                why = entry.get("message") or message or "no message"
                raise DeployFailedError(f"Serve could not apply it: {why.strip().splitlines()[0]}")
            if status == "RUNNING" and entry.get("status") == "HEALTHY" and live == user_config:
                return
            last = f"app {status}, {deployment} {entry.get('status', 'missing')}"
        if clock() >= deadline:
            raise ApplyTimeoutError(f"not applied after {timeout_s:g}s ({last})")
        sleep(poll_s)
