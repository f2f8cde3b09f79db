"""What `tutor models list` and `tutor models status` report, as data (pydantic, so --json is a
dump); ``render`` turns it into tables.

``list`` reads the registry, serve_config.yaml and the history: it needs no running app.
``status`` asks the running app what it serves and puts the live comparison beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from deployments.cli import serve_client
from deployments.cli.catalog import DEPLOYMENTS, deployment_of, key_metrics
from deployments.cli.config_file import ServeConfigFile
from deployments.cli.errors import ApplyError, RefusedError
from deployments.cli.operations import HISTORY_LIMIT, Workspace, registry_for
from deployments.cli.plan import ModelView, rollout_of
from models.common.registry import ArtifactNotFoundError
from store.records import RolloutEventRecord

logger = logging.getLogger(__name__)

# (store, model, since, *, champion) -> ModelReport
ReportFn = Callable[..., Any]
CompareFn = Callable[[Any, str, str], Any]  # (report, champion, candidate) -> Comparison


class VersionRow(BaseModel):
    version: str
    roles: list[str]  # champion, canary 50%, shadow, previous champion
    created_at: str = ""
    dataset: str = ""
    metrics: dict[str, Any] = {}


class ModelListing(BaseModel):
    model: str
    deployment: str
    registry: str
    versions: list[VersionRow]
    notes: list[str] = []


class RolloutState(BaseModel):
    """Who serves whom, as the file or the running app says (``latest`` resolved)."""

    champion: str
    canary: str | None = None
    percent: float | None = None
    canary_started_at: datetime | None = None
    shadow: str | None = None
    shadow_started_at: datetime | None = None
    guardrail_stopped: str | None = None  # a canary the guardrail rolled back, and why


class ModelStatus(BaseModel):
    model: str
    deployment: str
    app: str
    app_status: str
    deployment_status: str = ""  # HEALTHY, UPDATING, ... and Serve's message when it has one
    file: RolloutState
    live: RolloutState | None
    file_agrees: bool
    history: list[RolloutEventRecord]
    since: float | None = None
    report: dict[str, Any] | None = None  # online_metrics.model_report(...), dumped
    comparisons: dict[str, Any] = {}  # candidate version -> online_metrics.compare(...), dumped
    notes: list[str] = []


def _safe(resolve: Callable[[str], str], version: str) -> str:
    try:
        return resolve(version)
    except RefusedError:
        return version  # "latest" with nothing registered, or a version since removed


def state_of(view: ModelView) -> RolloutState:
    canary, shadow, stopped = view.canary, view.rollout.shadow, view.guardrail_stopped
    return RolloutState(
        champion=_safe(view.resolve, view.rollout.model_version),
        canary=canary.version if canary else None,
        percent=canary.percent if canary else None,
        canary_started_at=canary.started_at if canary else None,
        shadow=shadow.version if shadow else None,
        shadow_started_at=shadow.started_at if shadow else None,
        guardrail_stopped=(
            f"canary {view.rollout.canary.version} rolled back by the guardrail at "
            f"{datetime.fromtimestamp(stopped.ts, UTC).isoformat(timespec='seconds')}: "
            f"{stopped.reason}"
            if stopped and view.rollout.canary
            else None
        ),
    )


def _history(ws: Workspace, config: ServeConfigFile, model: str, notes: list[str]) -> list:
    """The model's history; a store that cannot be read is a note, not a failure of a report."""
    try:
        with ws.store_for(config, deployment_of(model)) as store:
            return store.rollout_events(model, limit=HISTORY_LIMIT)
    except Exception as exc:
        notes.append(f"promotion history unavailable: {exc}")
        return []


def list_models(ws: Workspace, name: str | None = None) -> list[ModelListing]:
    config = ServeConfigFile.load(ws.config_path)
    listings = []
    for model in [name] if name else list(DEPLOYMENTS):
        deployment = deployment_of(model)
        registry = registry_for(config, deployment)
        notes: list[str] = []
        view = ModelView(
            model=model,
            rollout=rollout_of(config.user_config(deployment)),
            versions=registry.versions(model),
            history=_history(ws, config, model, notes),
        )
        state = state_of(view)
        try:
            previous = view.previous_champion if view.versions else None
        except RefusedError:
            previous = None
        roles = {
            state.champion: "champion",
            state.canary: f"canary {state.percent:g}%" if state.canary else None,
            state.shadow: "shadow",
        }
        rows = []
        for version in view.versions:
            try:
                meta = registry.load(model, version).metadata
            except (ArtifactNotFoundError, OSError, ValueError, TypeError) as exc:
                notes.append(f"{version}: unreadable metadata.json ({exc})")
                rows.append(VersionRow(version=version, roles=[]))
                continue
            marks = [role for v, role in roles.items() if v == version and role is not None] + (
                ["previous champion"] if version == previous else []
            )
            rows.append(
                VersionRow(
                    version=version,
                    roles=marks,
                    created_at=meta.created_at,
                    dataset=meta.dataset,
                    metrics=key_metrics(model, meta.metrics),
                )
            )
        if not rows:
            notes.append(f"no registered versions in {registry.root / model}")
        if state.guardrail_stopped:
            notes.append(state.guardrail_stopped)
        listings.append(
            ModelListing(
                model=model,
                deployment=deployment,
                registry=str(registry.root / model),
                versions=rows,
                notes=notes,
            )
        )
    return listings


def default_report_fns() -> tuple[ReportFn, CompareFn] | None:
    """deployments.lifecycle.online_metrics' model_report and compare, when present.

    INTEGRATION POINT (issue 14): the lifecycle helper provides them; until then `status`
    shows the rollout and the history and says the comparison is unavailable."""
    try:
        from deployments.lifecycle import online_metrics
    except ImportError:
        return None
    report = getattr(online_metrics, "model_report", None)
    compare = getattr(online_metrics, "compare", None)
    return (report, compare) if report and compare else None


def _since(view: ModelView, live: RolloutState | None) -> float | None:
    """Compare versions from the candidate's start; without one, since the champion took over."""
    state = live or state_of(view)
    starts = [t.timestamp() for t in (state.canary_started_at, state.shadow_started_at) if t]
    if starts:
        return min(starts)
    changes = [e.ts for e in view.history if e.action in ("promote", "rollback")]
    return changes[-1] if changes else None


def model_status(
    ws: Workspace,
    name: str | None = None,
    *,
    history_tail: int = 5,
    report_fns: tuple[ReportFn, CompareFn] | None = None,
) -> list[ModelStatus]:
    config = ServeConfigFile.load(ws.config_path)
    models = [name] if name else list(DEPLOYMENTS)
    for model in models:
        deployment_of(model)  # a bad name is refused before anything is asked of Serve
    client = ws.connect(ws.address)
    try:
        details = client.get_serve_details()
    except Exception as exc:
        raise ApplyError(f"cannot read Serve's status at {ws.address}: {exc}") from exc
    report_fns = report_fns or default_report_fns()
    statuses = []
    for model in models:
        deployment = deployment_of(model)
        app = config.app_name(deployment)
        registry = registry_for(config, deployment)
        notes: list[str] = []
        with ws.store_for(config, deployment) as store:
            history = store.rollout_events(model, limit=HISTORY_LIMIT)
            file_view = ModelView(
                model, rollout_of(config.user_config(deployment)), registry.versions(model), history
            )
            live_configs = serve_client.live_user_configs(details, app)
            live_view = None
            if live_configs is None or deployment not in live_configs:
                notes.append(f"{deployment} is not running in application {app!r}")
            else:
                live_view = ModelView(
                    model, rollout_of(live_configs[deployment]), file_view.versions, history
                )
            file_state = state_of(file_view)
            live_state = state_of(live_view) if live_view else None
            status = ModelStatus(
                model=model,
                deployment=deployment,
                app=app,
                app_status=serve_client.app_status(details, app)[0],
                deployment_status=serve_client.deployment_status(details, app, deployment),
                file=file_state,
                live=live_state,
                file_agrees=live_view is not None and live_view.rollout == file_view.rollout,
                history=history[-history_tail:] if history_tail else [],
                since=_since(file_view, live_state),
                notes=notes,
            )
            _add_comparison(status, store, report_fns)
        statuses.append(status)
    return statuses


def _add_comparison(
    status: ModelStatus, store: Any, report_fns: tuple[ReportFn, CompareFn] | None
) -> None:
    if report_fns is None:
        status.notes.append(
            "live comparison unavailable: deployments.lifecycle.online_metrics.model_report "
            "is not installed yet"
        )
        return
    report_fn, compare_fn = report_fns
    state = status.live or status.file
    try:
        report = report_fn(store, status.model, status.since, champion=state.champion)
        status.report = report.model_dump(mode="json")
        for candidate in dict.fromkeys(v for v in (state.canary, state.shadow) if v):
            compared = compare_fn(report, state.champion, candidate)
            status.comparisons[candidate] = compared.model_dump(mode="json")
    except Exception as exc:  # the rollout is still worth showing without the metrics
        logger.debug("online metrics failed", exc_info=True)
        status.notes.append(f"live comparison failed: {type(exc).__name__}: {exc}")
