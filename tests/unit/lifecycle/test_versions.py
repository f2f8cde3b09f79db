"""A replica's versions: loaded before the plan switches, kept while in use, dropped after."""

from __future__ import annotations

import pytest

from deployments.lifecycle.rollout import RolloutConfig
from deployments.lifecycle.versions import VersionedModels

STARTED = "2026-01-01T00:00:00+00:00"


class _Loader:
    def __init__(self) -> None:
        self.loads: list[str] = []
        self.fail: set[str] = set()

    def __call__(self, version: str) -> dict:
        if version in self.fail:
            raise FileNotFoundError(version)
        self.loads.append(version)
        return {"version": version}


def _models(loader: _Loader) -> VersionedModels:
    return VersionedModels("emotion", load=loader, resolve=lambda v: "v4" if v == "latest" else v)


def test_a_canary_loads_beside_the_champion_and_promotion_reuses_what_is_loaded():
    loader = _Loader()
    models = _models(loader)
    models.apply(RolloutConfig(model_version="latest"))
    models.apply(
        RolloutConfig.model_validate(
            {
                "model_version": "v4",
                "canary": {"version": "v3", "percent": 50, "started_at": STARTED},
            }
        )
    )
    assert loader.loads == ["v4", "v3"]
    held = models.pick(None)  # a call in flight keeps the object it picked
    models.apply(RolloutConfig(model_version="v3"))
    assert loader.loads == ["v4", "v3"]  # nothing reloaded
    assert held.model == {"version": "v4"} and models.pick("x").version == "v3"
    assert models.plan.loaded == ["v3"]


def test_a_version_that_cannot_load_leaves_the_plan_in_service_unchanged():
    loader = _Loader()
    models = _models(loader)
    models.apply(RolloutConfig(model_version="v4"))
    loader.fail.add("v9")
    with pytest.raises(FileNotFoundError):
        models.apply(
            RolloutConfig.model_validate({"model_version": "v4", "shadow": {"version": "v9"}})
        )
    assert models.plan.loaded == ["v4"] and models.shadow() is None


def test_the_guardrail_stops_only_the_canary_it_judged():
    models = _models(_Loader())
    models.apply(
        RolloutConfig.model_validate(
            {
                "model_version": "v4",
                "canary": {"version": "v3", "percent": 99, "started_at": STARTED},
            }
        )
    )
    assert not models.stop_canary("v2")
    assert models.stop_canary("v3")
    assert models.plan.canary is None and models.pick("anyone").version == "v4"


def test_a_setting_every_model_is_built_with_reloads_every_version():
    loader = _Loader()
    size = {"cache": 10}
    models = VersionedModels(
        "difficulty", load=loader, resolve=str, reload_key=lambda: size["cache"]
    )
    models.apply(RolloutConfig(model_version="v2"))
    models.apply(RolloutConfig(model_version="v2"))
    size["cache"] = 20
    models.apply(RolloutConfig(model_version="v2"))
    assert loader.loads == ["v2", "v2"]
