"""pipelines.difficulty.train as a Ray Train job: epochs reported, the checkpoint registered as a
version, the run's folder recorded relative to --storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from models.common.registry import ModelRegistry
from models.difficulty.tracer import KnowledgeTracer
from pipelines.common import shared_data_dir

pytestmark = [pytest.mark.integration, pytest.mark.data]
KT_DIR = shared_data_dir() / "kt"


@pytest.fixture(scope="module", autouse=True)
def own_ray():
    yield
    ray.shutdown()  # the job started a private local Ray in this process


@pytest.mark.parametrize("model", ["dkt", "akt"])
def test_a_small_run_registers_a_servable_version(model, tmp_path):
    if not (KT_DIR / "assist2009_pid").is_dir():
        pytest.skip(f"shared data not found at {KT_DIR}")
    from pipelines.difficulty.train import main

    result = main(
        [
            "--model", model, "--data", str(KT_DIR), "--limit-students", "40",
            "--epochs", "2", "--registry", str(tmp_path / "registry"),
            "--storage", str(tmp_path / "runs"),
            "--allow-dirty",  # a test runs from whatever the working tree holds
        ]
    )  # fmt: skip
    artifact = ModelRegistry(tmp_path / "registry").load("difficulty", result["version"])
    assert artifact.metadata.config["model"] == model
    assert {"tracer_weights.pt", "tracer_config.json"} <= set(artifact.metadata.files)
    assert len(artifact.metadata.metrics["history"]) == result["metrics"]["epochs_run"] >= 1
    assert 0.0 < artifact.metadata.metrics["test_auc"] < 1.0
    run_folder = Path(artifact.metadata.config["ray_train_checkpoint"])
    assert not run_folder.is_absolute()
    assert (tmp_path / "runs" / run_folder).is_dir()
    tracer = KnowledgeTracer.from_artifact(artifact.path)
    assert tracer.describe()["model"] == model
    [p] = tracer.predict([], [("1366", "9")])
    assert 0.0 < p.p_correct < 1.0
