"""Registering a personalization version: the simulation's figures and policy.json, once."""

import numpy as np
import pytest

from models.common.registry import ModelRegistry
from models.personalization.policy_version import MODEL_NAME, PolicyVersion
from pipelines.common import shared_data_dir
from pipelines.personalization.register_policy import (
    SIMULATED_POLICY,
    register_policy,
    simulation_metrics,
)
from pipelines.personalization.simulate import run_policy, summarise
from pipelines.personalization.simulator import SimulatorConfig

KT_DIR = shared_data_dir() / "kt"
SERVED = PolicyVersion("lin_ts_v1", 0.5, 1.0)


def _register(registry, policy, **metrics):
    return register_policy(
        registry,
        policy,
        dataset="assist2009_pid fold 1 test split",
        code_version="abc1234",
        metrics=metrics,
        config={"simulator": {"turns": 10}},
    )


def test_versions_hold_their_policy_and_metrics(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = _register(registry, SERVED, mean_reward=0.75)
    second = _register(registry, PolicyVersion("lin_ts_v1", 0.25, 1.0), mean_reward=0.76)
    assert (first.version, second.version) == ("v1", "v2")
    artifact = registry.load(MODEL_NAME, "v1")
    assert artifact.metadata.files == ["policy.json"]
    assert artifact.metadata.metrics == {"mean_reward": 0.75}
    assert PolicyVersion.from_artifact(artifact.path) == SERVED
    assert PolicyVersion.from_artifact(registry.load(MODEL_NAME).path).exploration == 0.25


def test_a_policy_already_registered_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    _register(registry, SERVED)
    with pytest.raises(FileExistsError, match="personalization v1 already holds"):
        _register(registry, PolicyVersion("lin_ts_v1", 0.5, 1.0))
    assert registry.versions(MODEL_NAME) == ["v1"]


@pytest.mark.skipif(
    not (KT_DIR / "assist2009_pid").is_dir(), reason=f"shared data not found at {KT_DIR}"
)
def test_the_metrics_are_the_simulation_reports_row():
    config = SimulatorConfig(turns=300, active_learners=16, seed=3)
    run = run_policy(
        SIMULATED_POLICY,
        config,
        PolicyVersion("lin_ts_v1", 0.25, 1.0).thompson_config(),
        difficulty_version="v2",
        data_dir=KT_DIR,
    )
    metrics = simulation_metrics(run, config)
    row = summarise([run])["policies"][SIMULATED_POLICY]
    for key in ("mean_reward", "mean_expected_reward", "regret_per_turn", "choices"):
        assert metrics[key] == row[key]
    assert (metrics["turns"], metrics["seed"]) == (300, 3)
    assert metrics["mean_reward"] == pytest.approx(np.mean(run["rewards"]))
    assert 0 <= metrics["regret_per_turn"] <= 1
