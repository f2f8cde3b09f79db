"""Researchers' path: every job submitted with `ray job submit`, as to a cluster's head.

One local job server for the module (tests/support/job_server.py) stands in for a cluster; each
job gets the repository as its working directory (uploaded, as it would be to a remote cluster),
its data location through ``TUTOR_DATA_DIR`` and absolute output paths. Smoke-sized runs.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from models.common.registry import DEFAULT_REGISTRY_ROOT
from pipelines import export_store
from pipelines.common import shared_data_dir
from pipelines.difficulty import batch_score as difficulty_job
from store import open_store
from tests.support import research_data
from tests.support.job_server import local_job_server, submit
from tests.support.tiny_export import write_tiny_export

pytestmark = [pytest.mark.integration]
GOEMOTIONS = shared_data_dir() / "goemotions"


@pytest.fixture(scope="module")
def job_server(ray_dir):
    with local_job_server(ray_dir) as address:
        yield address


@pytest.mark.data
def test_train_emotion_runs_as_a_submitted_job(job_server, tmp_path):
    if not (GOEMOTIONS / "original").is_dir():
        pytest.skip(f"GoEmotions data not found at {GOEMOTIONS} (set TUTOR_DATA_DIR)")
    ok, output = submit(
        job_server,
        ["python", "-m", "pipelines.emotion.train", "--limit-train", "32", "--limit-eval", "32",
         "--epochs", "1", "--threads", "1", "--no-register",
         "--storage", str(tmp_path / "results")],
        env_vars={"TUTOR_DATA_DIR": str(GOEMOTIONS.parent.resolve())},
    )  # fmt: skip
    assert ok, output[-4000:]
    # The pipeline ran to its end inside the job: trained, evaluated, checked its artifact.
    assert "test macro-F1" in output
    assert "merged artifact vs training logits" in output
    assert "--no-register: not registering" in output


@pytest.fixture(scope="module")
def research_store(tmp_path_factory):
    """A small store shaped like the tutor's (8 learners, 96 turns over 3 UTC days)."""
    root = tmp_path_factory.mktemp("research")
    uri = f"sqlite:///{root}/tutor.db"
    with open_store(uri) as store:
        research_data.fill(store, learners=8, turns=12)
    return uri, root


@pytest.fixture(scope="module")
def research_export(research_store):
    """That store's `make export` (in process: the job's own test is below)."""
    uri, root = research_store
    export_store.main(["--store", uri, "--out", str(root / "export_in_process")])
    return root / "export_in_process"


def test_export_and_off_policy_run_as_submitted_jobs(job_server, research_store):
    uri, root = research_store
    export = root / "export"
    ok, output = submit(job_server, ["python", "-m", "pipelines.export_store", "--store", uri,
                                     "--out", str(export)])  # fmt: skip
    assert ok, output[-4000:]
    days = sorted(p.name for p in (export / "turns").iterdir())
    assert len(days) == 3 and all(d.startswith("day=") for d in days)
    turns = pq.read_table(export / "turns")
    assert turns.num_rows == 96
    ok, output = submit(
        job_server,
        ["python", "-m", "pipelines.personalization.off_policy_eval", "--export", str(export),
         "--stats", str(export / "bandit" / "lin_ts_v1.json"), "--out", str(root / "ope.json"),
         "--policies", "uniform", "greedy", "lin_ts", "--samples", "64", "--folds", "3"],
    )  # fmt: skip
    assert ok, output[-4000:]
    report = json.loads((root / "ope.json").read_text())
    assert report["rows_used"] == 96


def test_at_risk_scores_every_learner_of_an_export_as_a_submitted_job(
    job_server, research_store, research_export
):
    uri, root = research_store
    out = root / "at_risk"
    ok, output = submit(
        job_server,
        ["python", "-m", "pipelines.difficulty.at_risk", "score", "--export", str(research_export),
         "--out", str(out), "--store", uri, "--partitions", "2"],
    )  # fmt: skip
    assert ok, output[-4000:]
    rows = pq.read_table(out / "at_risk.parquet").to_pylist()
    assert sorted(r["learner_id"] for r in rows) == [f"learner-{i}" for i in range(8)]
    risks = [r["risk"] for r in rows]
    assert risks == sorted(risks, reverse=True)  # riskiest first
    assert all(r["answers"] == 12 and r["turns"] == 12 for r in rows)
    # Every learner has turns, so a disengagement score from their served emotions and pace.
    assert all(0 <= r["disengagement"] <= 1 for r in rows)
    assert all(reason["kind"] in ("risk", "disengagement") for r in rows for reason in r["reasons"])
    with open_store(uri) as store:
        stored = store.learner_risk(rows[0]["learner_id"])
    # The store holds what the Parquet says (the same float64, 1e-12).
    assert stored is not None and stored.risk == pytest.approx(rows[0]["risk"], abs=1e-12)
    assert stored.run_id == rows[0]["run_id"]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """5 learners x 8 turns, each with an answer, on real ASSISTments item ids."""
    return write_tiny_export(tmp_path_factory.mktemp("tiny") / "export", learners=5, answers=8)


def batch_score(address: str, model: str, version: str, export, out, *extra: str) -> dict:
    minimum = {"emotion": "min_turns=1", "difficulty": "min_answers=1"}[model]
    ok, output = submit(
        address,
        ["python", "-m", "pipelines.batch_score", "--model", model, "--version", version,
         "--export", str(export), "--out", str(out), "--concurrency", "1",
         "--threshold", minimum, *extra],
    )  # fmt: skip
    assert ok, output[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] in ("pass", "fail") and report["checks"] and report["thresholds"]
    assert (out / "report.md").read_text().startswith(f"# Batch scoring: {model} {version}")
    assert report["throughput"]["job"]["rows_per_s"] > 0
    return report


def scored(out):
    return pads.dataset(out / "scored", format="parquet").to_table().to_pandas()


def test_batch_score_emotion_scores_every_logged_turn_once(job_server, tiny_export, tmp_path):
    report = batch_score(job_server, "emotion", "v4", tiny_export, tmp_path)
    rows = scored(tmp_path)
    turns = pads.dataset(tiny_export / "turns", partitioning="hive").to_table().to_pandas()
    assert sorted(rows["turn_id"]) == sorted(turns["turn_id"])
    assert set(rows["version"]) == {"v4"} and "message" not in rows.columns
    probs = rows[[c for c in rows.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    fallbacks = int((turns["version_emotion"] == "unavailable").sum())
    assert report["comparison"]["not_comparable_turns"] == fallbacks
    assert report["rows"] == {"input": 40, "scored": 40}


# Learners grouped on the driver (the default) and by Ray Data's distributed sort (big exports).
@pytest.mark.parametrize(
    "grouping", [[], ["--distributed-sort", "--blocks", "3"]], ids=["driver", "distributed_sort"]
)
def test_batch_score_difficulty_scores_every_answer_from_whole_histories(
    job_server, tiny_export, tmp_path, grouping
):
    report = batch_score(job_server, "difficulty", "v1", tiny_export, tmp_path, *grouping)
    rows = scored(tmp_path).sort_values("source_id").reset_index(drop=True)
    answers = pads.dataset(tiny_export / "answers", partitioning="hive").to_table().to_pandas()
    assert sorted(rows["source_id"]) == sorted(answers["source_id"])
    assert set(rows["version"]) == {"v1"}
    assert report["comparison"]["served_version_from"]["turn"] > 0
    # The same callable over the whole export in this process: the same numbers (1e-6), so no
    # learner's history was split between blocks of the job.
    scorer = difficulty_job.Scorer(
        registry_dir=str(DEFAULT_REGISTRY_ROOT), version="v1", champion="v2"
    )
    expected = scorer(difficulty_job.raw_input(tiny_export)).sort_values("source_id")
    np.testing.assert_allclose(rows["p_correct"], expected["p_correct"], atol=1e-6)


@pytest.mark.data
def test_at_risk_evaluation_runs_as_a_submitted_job(job_server, tmp_path):
    kt = shared_data_dir() / "kt"
    if not (kt / "assist2009_pid").is_dir():
        pytest.skip(f"KT data not found at {kt} (set TUTOR_DATA_DIR)")
    ok, output = submit(
        job_server,
        ["python", "-m", "pipelines.difficulty.at_risk", "evaluate", "--datasets",
         "assist2009_pid", "--limit", "60", "--no-reference", "--out", str(tmp_path / "r.json")],
        env_vars={"TUTOR_DATA_DIR": str(shared_data_dir().resolve())},
    )  # fmt: skip
    assert ok, output[-4000:]
    [dataset] = json.loads((tmp_path / "r.json").read_text())["datasets"].values()
    assert len(dataset["folds"]) == 5
