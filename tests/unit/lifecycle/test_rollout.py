"""The canary split: stable per learner, near the asked share, monotone as it grows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployments.lifecycle.rollout import (
    ResolvedRollout,
    RolloutConfig,
    UnknownVersionError,
    learner_bucket,
)

LEARNERS = [f"learner-{i}" for i in range(1000)]

STARTED = "2026-01-01T00:00:00+00:00"


def _plan(percent: float = 20.0, shadow: str | None = None) -> ResolvedRollout:
    config = RolloutConfig.model_validate(
        {
            "model_version": "latest",
            "canary": {"version": "v3", "percent": percent, "started_at": STARTED},
            "shadow": {"version": shadow} if shadow else None,
        }
    )
    return ResolvedRollout.resolve("emotion", config, lambda v: "v4" if v == "latest" else v)


@pytest.mark.parametrize("percent", [5, 20, 50, 90])
def test_the_canary_share_over_1000_learners_is_within_5_points(percent):
    plan = _plan(percent)
    share = sum(plan.route(learner).version == "v3" for learner in LEARNERS) / len(LEARNERS)
    assert abs(share * 100 - percent) <= 5


def test_a_learner_keeps_one_version_across_turns_and_a_growing_canary_keeps_its_learners():
    small, large = _plan(10), _plan(40)
    for learner in LEARNERS:
        first = small.route(learner)
        assert all(small.route(learner) == first for _ in range(3))
        if first.role == "canary":
            assert large.route(learner).version == "v3"


def test_models_split_learners_independently():
    in_emotion = {x for x in LEARNERS if learner_bucket("emotion", x) < 50}
    in_difficulty = {x for x in LEARNERS if learner_bucket("difficulty", x) < 50}
    overlap = len(in_emotion & in_difficulty) / len(LEARNERS)
    assert 0.2 < overlap < 0.3  # ~25% when independent, 50% when the same hash


def test_calls_without_a_learner_get_the_champion_unless_they_name_a_loaded_version():
    plan = _plan(99, shadow="v2")
    assert plan.route(None).version == "v4"
    assert plan.route(None, requested="v2").role == "requested"
    assert plan.loaded == ["v4", "v3", "v2"]
    with pytest.raises(UnknownVersionError, match="v1 is not loaded"):
        plan.route("anyone", requested="v1")


def test_a_stopped_canary_sends_everyone_to_the_champion_and_keeps_the_shadow():
    plan = _plan(99, shadow="v2").without_canary()
    assert {plan.route(x).version for x in LEARNERS[:50]} == {"v4"}
    assert plan.shadow == "v2" and plan.describe()["canary"] is None


@pytest.mark.parametrize(
    "user_config",
    [
        {"model_version": "v3", "canary": {"version": "v3", "percent": 10, "started_at": STARTED}},
        {"model_version": "v3", "shadow": {"version": "v3"}},
        {"model_version": "v4", "canary": {"version": "v3", "percent": 0}},
        {"model_version": "v4", "canary": {"version": "v3", "percent": 100}},
        {"model_version": "v4", "canary": {"version": "v3"}},
        {"model_version": "v4", "canary": {"version": "v3", "percent": 10}},  # no started_at
    ],
)
def test_contradictory_plans_are_refused(user_config):
    with pytest.raises(ValidationError):
        RolloutConfig.model_validate(user_config)
