"""The work of `tutor models ...`, as functions the tests call with a fake Serve client.

A change goes: plan (refused -> nothing touched) -> check the app is running -> deploy the whole
new config through Serve's deploy path -> wait until the app runs it -> write serve_config.yaml
-> record the event. The file and the history are written only once the application runs the
change, so they never claim what is not serving.
"""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from deployments.cli import serve_client
from deployments.cli.catalog import deployment_of
from deployments.cli.config_file import ServeConfigFile
from deployments.cli.errors import (
    ApplyError,
    ApplyTimeoutError,
    DeployFailedError,
    RefusedError,
)
from deployments.cli.plan import Change, ModelView, rollout_of
from deployments.config import USER_CONFIG_MODELS, TutorSettings, absolute_store_uri
from deployments.lifecycle.rollout import utc_now
from models.common.registry import ModelRegistry
from store.records import RolloutEventRecord

# Enough to replay any realistic promotion history; the stack needs all of it.
HISTORY_LIMIT = 10_000


class HistoryStore(Protocol):
    """The part of store.base.TutorStore the command uses."""

    def rollout_events(
        self, model: str | None = None, *, limit: int = 100
    ) -> list[RolloutEventRecord]: ...

    def add_rollout_event(self, event: RolloutEventRecord) -> bool: ...

    def close(self) -> None: ...


def _default_open_store(uri: str) -> HistoryStore:
    from store.factory import open_store

    return open_store(uri)


def _default_connect(address: str) -> serve_client.ServeClient:
    return serve_client.connect(address)  # looked up per call, so tests can replace it


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli:unknown"


def validate_user_config(deployment: str, user_config: dict[str, Any]) -> None:
    """Check the new user_config with the deployment's own model (deployments.config), so a
    config its reconfigure() would reject is refused here, before the app is touched."""
    model = USER_CONFIG_MODELS.get(deployment)
    if model is None:
        return
    try:
        model.model_validate(user_config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RefusedError(
            f"{deployment}'s user_config would be refused by the deployment: "
            f"{where}: {first['msg']}"
        ) from None


@dataclass
class Workspace:
    """Everything a command acts on; tests replace the collaborators."""

    config_path: Path
    address: str = field(default_factory=serve_client.default_address)
    connect: Callable[[str], serve_client.ServeClient] = _default_connect
    open_store: Callable[[str], HistoryStore] = _default_open_store
    validate: Callable[[str, dict[str, Any]], None] = validate_user_config
    actor: str = field(default_factory=_default_actor)
    now: Callable[[], datetime] = utc_now
    settings: TutorSettings | None = None  # None: read from the environment when needed

    def store_uri(self, config: ServeConfigFile, deployment: str) -> str:
        settings = self.settings or TutorSettings()
        return absolute_store_uri(config.app_args(deployment).resolved_store_uri(settings))

    @contextmanager
    def store_for(self, config: ServeConfigFile, deployment: str) -> Iterator[HistoryStore]:
        uri = self.store_uri(config, deployment)
        try:
            store = self.open_store(uri)
        except Exception as exc:
            raise ApplyError(f"cannot open the store {uri}: {exc}") from exc
        try:
            yield store
        finally:
            store.close()


def registry_for(config: ServeConfigFile, deployment: str) -> ModelRegistry:
    return ModelRegistry(config.app_args(deployment).registry_dir)


def load_view(
    config: ServeConfigFile, model: str, store: HistoryStore, registry: ModelRegistry
) -> ModelView:
    deployment = deployment_of(model)
    return ModelView(
        model=model,
        rollout=rollout_of(config.user_config(deployment)),
        versions=registry.versions(model),
        history=store.rollout_events(model, limit=HISTORY_LIMIT),
    )


class ChangeResult(BaseModel):
    summary: str
    event: RolloutEventRecord
    waited: bool
    config_path: str
    warnings: list[str] = []


def apply_change(
    ws: Workspace,
    model: str,
    planner: Callable[[ModelView], Change],
    *,
    reason: str = "",
    wait: bool = True,
    timeout_s: float = 300.0,
    poll_s: float = 0.5,
) -> ChangeResult:
    """Plan the change with ``planner``, apply it to the running app, then write the file and
    the history. Refusals (RefusedError) happen before anything is touched."""
    deployment = deployment_of(model)
    config = ServeConfigFile.load(ws.config_path)
    app = config.app_name(deployment)
    with ws.store_for(config, deployment) as store:
        view = load_view(config, model, store, registry_for(config, deployment))
        change = planner(view)
        previous = serve_client.validate_deploy_config(config.deploy_config())
        config.set_rollout(deployment, change.before, change.after)
        new = config.deploy_config()
        new_user_config = _user_config_in(new, app, deployment)
        ws.validate(deployment, new_user_config)
        new = serve_client.validate_deploy_config(new)

        client = ws.connect(ws.address)
        warnings = _check_running(client, app, deployment, previous)
        client.deploy_applications(new)
        if wait:
            _wait_or_restore(client, app, deployment, new_user_config, previous, timeout_s, poll_s)
        config.write()
        event = change.event(
            event_id=f"cli:{uuid.uuid4().hex}", reason=reason, actor=ws.actor, ts=time.time()
        )
        try:
            store.add_rollout_event(event)
        except Exception as exc:
            raise ApplyError(
                f"{change.summary}: applied and written to {config.path}, but the history "
                f"could not record it: {exc}"
            ) from exc
    return ChangeResult(
        summary=change.summary,
        event=event,
        waited=wait,
        config_path=str(config.path),
        warnings=warnings,
    )


def _user_config_in(config: dict[str, Any], app: str, deployment: str) -> dict[str, Any]:
    entry = next(a for a in config["applications"] if a.get("name", "default") == app)
    return next(d for d in entry["deployments"] if d["name"] == deployment)["user_config"]


def _check_running(
    client: serve_client.ServeClient, app: str, deployment: str, previous: dict[str, Any]
) -> list[str]:
    """The app must be RUNNING: a change never starts an application or races another change.
    Returns warnings when the app runs something other than the file says."""
    details = client.get_serve_details()
    status, _ = serve_client.app_status(details, app)
    if status != "RUNNING":
        raise ApplyError(
            f"application {app!r} is {status}, not RUNNING: nothing changed "
            "(start it with `make serve`, or wait for the change in progress)"
        )
    live = serve_client.live_user_configs(details, app) or {}
    in_file = _user_config_in(previous, app, deployment)
    if live.get(deployment) != in_file:
        return [
            f"{deployment} was running a user_config other than the file's; the file's "
            "(with this change) is what runs now"
        ]
    return []


def _wait_or_restore(
    client: serve_client.ServeClient,
    app: str,
    deployment: str,
    user_config: dict[str, Any],
    previous: dict[str, Any],
    timeout_s: float,
    poll_s: float,
) -> None:
    try:
        serve_client.wait_applied(
            client,
            app=app,
            deployment=deployment,
            user_config=user_config,
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
    except ApplyTimeoutError as exc:
        raise ApplyTimeoutError(
            f"{exc}; serve_config.yaml and the history are unchanged, the app may still be "
            "applying it: see `tutor models status`"
        ) from exc
    except DeployFailedError as exc:
        # Serve refused it: put back what ran before, so a failed change changes nothing.
        client.deploy_applications(previous)
        raise DeployFailedError(
            f"{exc}; the previous config was deployed again, serve_config.yaml and the "
            "history are unchanged"
        ) from exc
