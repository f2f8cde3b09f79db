"""`make batch-score` on a tiny export through a real local Ray Data: one row per logged row,
keyed to it, the report's fields, and the difficulty job's learners kept whole by its grouping,
on the driver or by Ray Data's distributed sort (the same numbers as the callable run in
process)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import ray

from models.common.registry import DEFAULT_REGISTRY_ROOT
from pipelines import batch_score
from pipelines.difficulty import batch_score as difficulty_job
from tests.support.tiny_export import write_tiny_export

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def export(tmp_path_factory, ray_dir):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "disabled")  # a token left in ~/.ray must not turn it on
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(ray_dir))
        try:
            yield write_tiny_export(tmp_path_factory.mktemp("export"), learners=5, answers=8)
        finally:
            ray.shutdown()


def scored(out) -> pd.DataFrame:
    return pads.dataset(out / "scored", format="parquet").to_table().to_pandas()


MIN_ROWS = {"emotion": "min_turns=1", "difficulty": "min_answers=1"}


def run(model: str, version: str, export, out, *extra: str) -> dict:
    args = batch_score.parse_args(
        ["--model", model, "--version", version, "--export", str(export), "--out", str(out),
         "--concurrency", "1", "--blocks", "3", "--threshold", MIN_ROWS[model], *extra]
    )  # fmt: skip
    result = batch_score.run(args)
    assert json.loads((out / "report.json").read_text())["verdict"] == result["verdict"]
    assert result["verdict"] in ("pass", "fail")
    assert (out / "report.md").read_text().startswith(f"# Batch scoring: {model} {version}")
    assert result["throughput"]["job"]["rows_per_s"] > 0
    assert {c["name"] for c in result["checks"]} and result["thresholds"]
    return result


def test_emotion_scores_every_logged_turn_once(export, tmp_path):
    result = run("emotion", "v4", export, tmp_path)
    rows = scored(tmp_path)
    turns = pads.dataset(export / "turns", partitioning="hive").to_table().to_pandas()
    assert sorted(rows["turn_id"]) == sorted(turns["turn_id"])
    assert set(rows["version"]) == {"v4"} and "message" not in rows.columns
    probs = rows[[c for c in rows.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    fallbacks = int((turns["version_emotion"] == "unavailable").sum())
    assert result["comparison"]["not_comparable_turns"] == fallbacks
    assert result["rows"] == {"input": 40, "scored": 40}


@pytest.mark.parametrize("grouping", [[], ["--distributed-sort"]], ids=["driver", "sort"])
def test_difficulty_scores_every_answer_from_whole_learner_histories(export, tmp_path, grouping):
    result = run("difficulty", "v1", export, tmp_path, *grouping)
    told = result["throughput"]["job"]["input"]["grouping"]
    assert ("distributed sort" in told) == bool(grouping)
    rows = scored(tmp_path).sort_values("source_id").reset_index(drop=True)
    answers = pads.dataset(export / "answers", partitioning="hive").to_table().to_pandas()
    assert sorted(rows["source_id"]) == sorted(answers["source_id"])
    assert set(rows["version"]) == {"v1"}
    assert result["comparison"]["served_version_from"]["turn"] > 0
    # The same callable over the whole export in one process: the same numbers.
    scorer = difficulty_job.Scorer(
        registry_dir=str(DEFAULT_REGISTRY_ROOT), version="v1", champion="v2"
    )
    expected = scorer(difficulty_job.raw_input(export)).sort_values("source_id")
    np.testing.assert_allclose(rows["p_correct"], expected["p_correct"], atol=1e-6)
    np.testing.assert_allclose(rows["served_p_correct"], expected["served_p_correct"], atol=1e-6)
    assert rows.groupby("learner_id")["position"].max().eq(7).all()
