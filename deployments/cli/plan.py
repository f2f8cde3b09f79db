"""What a `tutor models ...` change does to one model's rollout, computed without touching
anything: the new rollout fields of its user_config and the history event that records them.

Pure functions of a ``ModelView`` (the file's rollout, the registry's versions, the promotion
history), so every rule here is unit-tested without Serve or a store. A refused request raises
``RefusedError`` before anything is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from deployments.cli.errors import RefusedError
from deployments.lifecycle.rollout import (
    CanarySplit,
    RolloutConfig,
    ShadowRun,
    guardrail_event_id,
)
from store.records import RolloutEventRecord

# The user_config keys this command owns; every other key (tunables) is left as it is.
ROLLOUT_FIELDS = tuple(RolloutConfig.model_fields)


def rollout_of(user_config: dict[str, Any] | None) -> RolloutConfig:
    """The rollout fields of a deployment's user_config (its other keys are not ours)."""
    fields = {k: v for k, v in (user_config or {}).items() if k in ROLLOUT_FIELDS}
    try:
        return RolloutConfig.model_validate(fields)
    except ValidationError as exc:
        raise RefusedError(
            f"the rollout fields in the user_config are invalid: {_brief(exc)}"
        ) from None


def champion_stack(history: Sequence[RolloutEventRecord]) -> list[str]:
    """The champions in order, replayed from the history (oldest first): a promotion pushes,
    a rollback of the champion pops. A guardrail's rollback ends a canary, not a champion (its
    from_version is the canary), so it leaves the stack alone."""
    stack: list[str] = []
    for event in history:
        if event.action == "promote" and event.to_version:
            if event.from_version and (not stack or stack[-1] != event.from_version):
                stack.append(event.from_version)  # history starts here, or the file was edited
            stack.append(event.to_version)
        elif event.action == "rollback" and stack and stack[-1] == event.from_version:
            stack.pop()
            if event.to_version and (not stack or stack[-1] != event.to_version):
                stack.append(event.to_version)
    return stack


@dataclass(frozen=True)
class ModelView:
    """One model as the command sees it before a change."""

    model: str
    rollout: RolloutConfig  # as serve_config.yaml says
    versions: list[str]  # registered, oldest first
    history: list[RolloutEventRecord] = field(default_factory=list)  # oldest first

    def resolve(self, version: str) -> str:
        """A registered version; "latest" is the newest one."""
        if version == "latest" and self.versions:
            return self.versions[-1]
        if version not in self.versions:
            known = ", ".join(self.versions) or "none"
            raise RefusedError(f"{self.model} has no version {version!r}; registered: {known}")
        return version

    @property
    def champion(self) -> str:
        return self.resolve(self.rollout.model_version)

    @property
    def guardrail_stopped(self) -> RolloutEventRecord | None:
        """The guardrail's rollback of the canary the file names, if it happened: that canary
        is over (replicas no longer serve it) though the file still names it."""
        canary = self.rollout.canary
        if canary is None:
            return None
        event_id = guardrail_event_id(self.model, canary.version, canary.started_at.timestamp())
        return next((e for e in self.history if e.event_id == event_id), None)

    @property
    def canary(self) -> CanarySplit | None:
        """The canary that is running: the file's, unless the guardrail ended it."""
        return None if self.guardrail_stopped else self.rollout.canary

    @property
    def previous_champion(self) -> str | None:
        stack = champion_stack(self.history)
        champion = self.champion
        if stack and stack[-1] == champion:
            return stack[-2] if len(stack) > 1 else None
        # The file names a champion the history never recorded (edited by hand): the last
        # recorded champion is the one before it.
        return stack[-1] if stack else None


@dataclass(frozen=True)
class Change:
    """A planned change: the rollout before (as the file says) and after, and its event."""

    model: str
    action: str
    before: RolloutConfig
    after: RolloutConfig
    summary: str
    from_version: str | None = None
    to_version: str | None = None
    percent: float | None = None

    def event(self, *, event_id: str, reason: str, actor: str, ts: float) -> RolloutEventRecord:
        return RolloutEventRecord(
            event_id=event_id,
            model=self.model,
            action=self.action,
            from_version=self.from_version,
            to_version=self.to_version,
            percent=self.percent,
            reason=reason,
            actor=actor,
            ts=ts,
        )


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'rollout'}: {e['msg']}" for e in exc.errors()
    )


def _rollout(view: ModelView, **changes: Any) -> RolloutConfig:
    """The running rollout (a canary the guardrail ended left out) with ``changes``, validated."""
    current = view.rollout.model_copy(update={"canary": view.canary})
    data = {**dict(current), **changes}
    try:
        return RolloutConfig.model_validate(data)
    except ValidationError as exc:
        raise RefusedError(f"{view.model}: {_brief(exc)}") from None


def _change(view: ModelView, action: str, after: RolloutConfig, summary: str, **kw) -> Change:
    return Change(
        model=view.model, action=action, before=view.rollout, after=after, summary=summary, **kw
    )


def plan_promote(view: ModelView, version: str) -> Change:
    """``version`` serves everyone; any canary ends; a shadow of the same version ends."""
    version = view.resolve(version)
    champion = view.champion
    if version == champion:
        raise RefusedError(f"{view.model} {version} is already the champion")
    shadow = view.rollout.shadow
    after = _rollout(
        view,
        model_version=version,
        canary=None,
        shadow=None if shadow and shadow.version == version else shadow,
    )
    ended = f" (ends canary {view.canary.version})" if view.canary else ""
    return _change(
        view,
        "promote",
        after,
        f"{view.model}: promote {version} (was {champion}){ended}",
        from_version=champion,
        to_version=version,
    )


def plan_canary(view: ModelView, version: str, percent: float, now: datetime) -> Change:
    """``percent`` % of learners get ``version``. Changing the share of the running canary keeps
    its start (the comparison window); a shadow of the same version becomes the canary."""
    version = view.resolve(version)
    champion = view.champion
    if version == champion:
        raise RefusedError(
            f"{view.model} {version} is the champion; a canary must be another version"
        )
    if not 0 < percent < 100:
        raise RefusedError(
            f"--percent must be above 0 and below 100 (use promote for 100), got {percent:g}"
        )
    running = view.canary
    if running and running.version != version:
        raise RefusedError(
            f"{view.model} canary {running.version} is running: "
            f"`tutor models rollback {view.model}` or promote it first"
        )
    started_at = running.started_at if running else now
    shadow = view.rollout.shadow
    after = _rollout(
        view,
        canary=CanarySplit(version=version, percent=percent, started_at=started_at),
        shadow=None if shadow and shadow.version == version else shadow,
    )
    verb = (
        f"canary {version} {running.percent:g}% -> {percent:g}%"
        if running
        else (f"canary {version} for {percent:g}% of learners")
    )
    return _change(
        view,
        "canary",
        after,
        f"{view.model}: {verb} (champion {champion})",
        from_version=champion,
        to_version=version,
        percent=percent,
    )


def plan_shadow(view: ModelView, version: str, now: datetime) -> Change:
    """``version`` also scores live requests; it replaces any other shadow."""
    version = view.resolve(version)
    champion = view.champion
    if version == champion:
        raise RefusedError(
            f"{view.model} {version} is the champion; a shadow must be another version"
        )
    if view.canary and view.canary.version == version:
        raise RefusedError(f"{view.model} {version} is the canary already; shadow another version")
    current = view.rollout.shadow
    if current and current.version == version:
        raise RefusedError(f"{view.model} {version} is the shadow already")
    after = _rollout(view, shadow=ShadowRun(version=version, started_at=now))
    replaced = f" (replaces shadow {current.version})" if current else ""
    return _change(
        view,
        "shadow",
        after,
        f"{view.model}: shadow {version} beside {champion}{replaced}",
        from_version=champion,
        to_version=version,
    )


def plan_end_shadow(view: ModelView) -> Change:
    current = view.rollout.shadow
    if current is None:
        raise RefusedError(f"{view.model} has no shadow running")
    after = _rollout(view, shadow=None)
    return _change(
        view,
        "end_shadow",
        after,
        f"{view.model}: shadow {current.version} ended",
        from_version=current.version,
    )


def plan_rollback(view: ModelView) -> Change:
    """With a canary running (or one the guardrail ended still in the file): end it, the
    champion stays. Otherwise: back to the previous champion of the history."""
    champion = view.champion
    canary = view.rollout.canary
    if canary is not None:
        after = _rollout(view, canary=None)
        stopped = " (the guardrail had already stopped it)" if view.guardrail_stopped else ""
        return _change(
            view,
            "end_canary",
            after,
            f"{view.model}: canary {canary.version} ended{stopped}; {champion} serves everyone",
            from_version=canary.version,
            to_version=champion,
            percent=canary.percent,
        )
    previous = view.previous_champion
    if previous is None:
        raise RefusedError(f"{view.model}: no champion before {champion} in the promotion history")
    previous = view.resolve(previous)
    shadow = view.rollout.shadow
    after = _rollout(
        view,
        model_version=previous,
        shadow=None if shadow and shadow.version == previous else shadow,
    )
    return _change(
        view,
        "rollback",
        after,
        f"{view.model}: rollback {champion} -> {previous}",
        from_version=champion,
        to_version=previous,
    )
