"""The at-risk scoring job over a tiny synthetic export, on one local Ray (num_cpus=1) for the
module: every learner scored once, the riskiest first, the store holding the newest run.

Tolerance: the risk read back from Parquet and from the store is the same float64 (1e-12)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from models.difficulty.risk import RiskModel
from models.difficulty.risk_features import FEATURES
from pipelines.difficulty import at_risk_job
from store.sqlite_store import SQLiteStore
from tests.support.risk_export import write_export

DAY = 86400.0
START = 1_795_000_000.0  # 2026-11-18 UTC


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_local(ray_dir):
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=str(ray_dir))
    yield ray
    ray.shutdown()


def _model() -> RiskModel:
    """Risk falls with recent and overall accuracy (the shape the fitted model has)."""
    coef = [-1.0 if f.startswith("acc_") else 0.0 for f in FEATURES]
    return RiskModel(coef, -1.0, [0.6] * len(FEATURES), [0.2] * len(FEATURES))


def test_every_learner_of_an_export_is_scored_and_stored(ray_local, tmp_path):
    failing = [("7", i < 8, START + 60 * i) for i in range(30)]  # right 8 times, then wrong
    strong = [("7", True, START + DAY + 60 * i) for i in range(30)]  # the next day
    turns = [(START + 60 * i, "frustrated") for i in range(6)]
    export = write_export(
        tmp_path / "export",
        answers={"T/ada": failing, "T/bob": strong},
        turns={"T/ada": turns, "T/cy": [(START, "engaged")]},  # cy: turns only
    )
    store_uri = f"sqlite:///{tmp_path / 'tutor.db'}"
    scored_at = START + 3 * DAY
    summary = at_risk_job.score_export(
        export,
        tmp_path / "out",
        model=_model(),
        model_version="difficulty_risk/v0",
        skill_names={"7": "Box and Whisker"},
        store_uri=store_uri,
        now=scored_at,
        partitions=2,
    )
    rows = pq.read_table(tmp_path / "out" / at_risk_job.OUTPUT_FILE).to_pylist()
    assert [r["learner_id"] for r in rows] == ["T/ada", "T/bob", "T/cy"]  # riskiest first
    ada, bob, cy = rows
    assert ada["risk"] > 0.5 > bob["risk"] and cy["risk"] is None
    assert (ada["answers"], ada["turns"], cy["turns"]) == (30, 6, 1)
    assert bob["disengagement"] is None and ada["disengagement"] > cy["disengagement"]
    texts = [r["text"] for r in ada["reasons"]]
    assert "accuracy 0 of the last 10 (0 of the last 5)" in texts
    assert "frustrated in 5 of the last 5 turns" in texts
    assert summary["learners"] == 3 and summary["store_records_written"] == 3

    with SQLiteStore(tmp_path / "tutor.db") as store:
        stored = store.learner_risk("T/ada")
        assert stored is not None and stored.scored_at == scored_at
        assert stored.risk == pytest.approx(ada["risk"], abs=1e-12)
        assert stored.model_version == "difficulty_risk/v0" and stored.run_id == ada["run_id"]
        assert store.learner_risk("ada") is None  # another namespace's id
        # An older run finishing late leaves the newer scores alone.
        store.put_learner_risks([stored.model_copy(update={"scored_at": START, "risk": 0.0})])
        assert store.learner_risk("T/ada") == stored
