"""The rollout rules of `tutor models ...`, without Serve or a store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deployments.cli.errors import RefusedError
from deployments.cli.plan import (
    ModelView,
    champion_stack,
    plan_canary,
    plan_end_shadow,
    plan_promote,
    plan_rollback,
    plan_shadow,
    rollout_of,
)
from deployments.lifecycle.rollout import CanarySplit, RolloutConfig, ShadowRun, guardrail_event_id
from store.records import RolloutEventRecord

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
VERSIONS = ["v1", "v2", "v3", "v4"]


def event(action, from_version=None, to_version=None, *, actor="cli:test", event_id=None, ts=0.0):
    return RolloutEventRecord(
        event_id=event_id or f"e{ts}-{action}-{to_version}",
        model="emotion",
        action=action,
        from_version=from_version,
        to_version=to_version,
        actor=actor,
        ts=ts,
    )


def view(history=(), **rollout) -> ModelView:
    return ModelView("emotion", RolloutConfig(**rollout), VERSIONS, list(history))


# ---- the history as a stack of champions ------------------------------------------------------


def test_promotions_push_and_rollbacks_pop():
    history = [
        event("promote", "v1", "v2", ts=1),
        event("promote", "v2", "v3", ts=2),
        event("promote", "v3", "v4", ts=3),
        event("rollback", "v4", "v3", ts=4),
    ]
    assert champion_stack(history) == ["v1", "v2", "v3"]
    assert view(history, model_version="v3").previous_champion == "v2"


def test_a_guardrail_rollback_ends_a_canary_not_a_champion():
    history = [
        event("promote", "v3", "v4", ts=1),
        event("canary", "v4", "v2", ts=2),
        event("rollback", "v2", "v4", actor="guardrail", ts=3),
    ]
    assert champion_stack(history) == ["v3", "v4"]
    assert view(history, model_version="v4").previous_champion == "v3"


def test_a_champion_set_by_hand_has_the_last_recorded_one_before_it():
    history = [event("promote", "v2", "v3", ts=1)]
    assert view(history, model_version="v4").previous_champion == "v3"
    assert view([], model_version="v4").previous_champion is None


# ---- promote ----------------------------------------------------------------------------------


def test_promote_ends_the_canary_and_a_shadow_of_the_promoted_version():
    current = view(
        model_version="v4",
        canary=CanarySplit(version="v3", percent=20, started_at=T0),
        shadow=ShadowRun(version="v2", started_at=T0),
    )
    change = plan_promote(current, "v2")
    assert change.after.model_version == "v2"
    assert change.after.canary is None and change.after.shadow is None
    assert (change.action, change.from_version, change.to_version) == ("promote", "v4", "v2")
    assert "ends canary v3" in change.summary


def test_promote_keeps_a_shadow_of_another_version():
    current = view(model_version="v4", shadow=ShadowRun(version="v2", started_at=T0))
    assert plan_promote(current, "v3").after.shadow.version == "v2"


@pytest.mark.parametrize(
    ("version", "message"),
    [("v4", "already the champion"), ("v9", "no version 'v9'"), ("latest", "already")],
)
def test_promote_refuses(version, message):
    with pytest.raises(RefusedError, match=message):
        plan_promote(view(model_version="v4"), version)


# ---- canary -----------------------------------------------------------------------------------


def test_canary_sets_version_share_and_start():
    change = plan_canary(view(model_version="v4"), "v3", 50, T0)
    assert change.after.canary == CanarySplit(version="v3", percent=50, started_at=T0)
    assert change.after.model_version == "v4"
    assert (change.action, change.to_version, change.percent) == ("canary", "v3", 50)


def test_changing_the_share_keeps_the_canary_start():
    current = view(model_version="v4", canary=CanarySplit(version="v3", percent=10, started_at=T0))
    change = plan_canary(current, "v3", 30, T1)
    assert change.after.canary.percent == 30
    assert change.after.canary.started_at == T0  # the comparison window is not reset


def test_a_canary_of_the_shadowed_version_ends_the_shadow():
    current = view(model_version="v4", shadow=ShadowRun(version="v3", started_at=T0))
    change = plan_canary(current, "v3", 25, T1)
    assert change.after.shadow is None and change.after.canary.version == "v3"


@pytest.mark.parametrize(
    ("version", "percent", "message"),
    [
        ("v4", 50, "is the champion"),
        ("latest", 50, "is the champion"),  # latest is v4
        ("v7", 50, "no version 'v7'"),
        ("v3", 0, "above 0 and below 100"),
        ("v3", 100, "above 0 and below 100"),
        ("v3", -5, "above 0 and below 100"),
    ],
)
def test_canary_refuses(version, percent, message):
    with pytest.raises(RefusedError, match=message):
        plan_canary(view(model_version="v4"), version, percent, T0)


def test_a_second_canary_of_another_version_is_refused():
    current = view(model_version="v4", canary=CanarySplit(version="v3", percent=10, started_at=T0))
    with pytest.raises(RefusedError, match="canary v3 is running"):
        plan_canary(current, "v2", 10, T1)


# ---- shadow -----------------------------------------------------------------------------------


def test_shadow_starts_and_replaces_and_stops():
    change = plan_shadow(view(model_version="v4"), "v3", T0)
    assert change.after.shadow == ShadowRun(version="v3", started_at=T0)
    replaced = plan_shadow(view(model_version="v4", shadow=change.after.shadow), "v2", T1)
    assert replaced.after.shadow.version == "v2" and "replaces shadow v3" in replaced.summary
    stopped = plan_end_shadow(view(model_version="v4", shadow=replaced.after.shadow))
    assert stopped.after.shadow is None
    assert (stopped.action, stopped.from_version) == ("end_shadow", "v2")


def test_shadow_refuses_the_champion_the_canary_and_nothing_to_stop():
    with pytest.raises(RefusedError, match="is the champion"):
        plan_shadow(view(model_version="v4"), "v4", T0)
    canary = CanarySplit(version="v3", percent=10, started_at=T0)
    with pytest.raises(RefusedError, match="canary already"):
        plan_shadow(view(model_version="v4", canary=canary), "v3", T0)
    with pytest.raises(RefusedError, match="no shadow running"):
        plan_end_shadow(view(model_version="v4"))


# ---- rollback ---------------------------------------------------------------------------------


def test_rollback_with_a_canary_ends_it_and_the_champion_stays():
    history = [event("promote", "v3", "v4", ts=1)]
    canary = CanarySplit(version="v2", percent=40, started_at=T0)
    change = plan_rollback(view(history, model_version="v4", canary=canary))
    assert change.after.model_version == "v4" and change.after.canary is None
    assert (change.action, change.from_version, change.to_version) == ("end_canary", "v2", "v4")


def test_rollback_without_a_canary_goes_back_one_champion_at_a_time():
    history = [event("promote", "v2", "v3", ts=1), event("promote", "v3", "v4", ts=2)]
    first = plan_rollback(view(history, model_version="v4"))
    assert (first.action, first.from_version, first.to_version) == ("rollback", "v4", "v3")
    history.append(first.event(event_id="r1", reason="", actor="cli:test", ts=3))
    second = plan_rollback(view(history, model_version="v3"))
    assert second.after.model_version == "v2"
    history.append(second.event(event_id="r2", reason="", actor="cli:test", ts=4))
    with pytest.raises(RefusedError, match="no champion before v2"):
        plan_rollback(view(history, model_version="v2"))


def test_rollback_drops_a_shadow_of_the_version_it_returns_to():
    history = [event("promote", "v3", "v4", ts=1)]
    current = view(history, model_version="v4", shadow=ShadowRun(version="v3", started_at=T0))
    assert plan_rollback(current).after.shadow is None


# ---- a canary the guardrail rolled back -------------------------------------------------------


def _guardrailed() -> ModelView:
    canary = CanarySplit(version="v3", percent=50, started_at=T0)
    stopped = event(
        "rollback",
        "v3",
        "v4",
        actor="guardrail",
        event_id=guardrail_event_id("emotion", "v3", T0.timestamp()),
        ts=5,
    )
    return view([event("promote", "v2", "v4", ts=1), stopped], model_version="v4", canary=canary)


def test_a_guardrail_rollback_means_the_files_canary_is_over():
    current = _guardrailed()
    assert current.guardrail_stopped is not None
    assert current.canary is None
    assert current.previous_champion == "v2"  # the guardrail did not pop the champion


def test_the_next_change_drops_a_canary_the_guardrail_ended():
    current = _guardrailed()
    change = plan_shadow(current, "v2", T1)
    assert change.before.canary is not None  # the file still names it ...
    assert change.after.canary is None  # ... and the change removes it
    # A new canary of the same version starts afresh.
    again = plan_canary(current, "v3", 10, T1)
    assert again.after.canary.started_at == T1


def test_rollback_after_the_guardrail_only_removes_the_canary_from_the_file():
    change = plan_rollback(_guardrailed())
    assert change.action == "end_canary" and change.after.model_version == "v4"
    assert "guardrail had already stopped it" in change.summary


def test_rollout_fields_are_read_beside_the_tunables():
    rollout = rollout_of({"model_version": "v3", "max_batch_size": 32, "canary": None})
    assert rollout.model_version == "v3" and rollout.canary is None
    with pytest.raises(RefusedError, match="canary"):
        rollout_of({"canary": {"version": "v3", "percent": 500}})
