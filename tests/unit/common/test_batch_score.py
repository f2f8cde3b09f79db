"""The batch-scoring job's shared parts without Ray: the gate's logic, the actors' options,
the champion read from serve_config.yaml."""

import argparse
import math

import pytest

from pipelines import batch_score, batch_throughput
from pipelines.batch_score import Check, actor_options, default_concurrency, verdict


def test_a_check_passes_on_its_side_of_the_threshold_inclusive():
    assert Check("auc", 0.75, ">=", 0.75).passed
    assert not Check("auc", 0.7499, ">=", 0.75).passed
    assert Check("ece", 0.05, "<=", 0.05).passed
    assert not Check("ece", 0.0501, "<=", 0.05).passed


@pytest.mark.parametrize("value", [math.nan, math.inf, None])
def test_a_figure_that_could_not_be_computed_never_passes(value):
    assert not Check("auc", value, ">=", 0.0).passed
    assert not Check("ece", value, "<=", 1.0).passed


def test_the_verdict_is_pass_only_when_every_check_passes():
    good, bad = Check("a", 1, ">=", 0), Check("b", 1, "<=", 0)
    assert verdict([good, good]) == "pass"
    assert verdict([good, bad]) == "fail"
    assert verdict([]) == "fail"  # nothing checked is nothing shown
    assert Check("a", 1, ">=", 0).as_dict()["passed"] is True


def test_actors_ask_for_a_gpu_share_only_when_the_cluster_has_gpus():
    cpu = actor_options({"CPU": 3.0}, concurrency=2, threads=1)
    assert cpu["compute"].min_size == cpu["compute"].max_size == 2
    assert cpu["num_cpus"] == 1 and "num_gpus" not in cpu
    assert actor_options({"CPU": 8, "GPU": 1}, concurrency=2, threads=2)["num_gpus"] == 0.5
    assert actor_options({"CPU": 8, "GPU": 4}, concurrency=2, threads=2)["num_gpus"] == 1.0


def test_one_actor_per_core_keeping_one_cpu_for_reading_and_writing():
    assert default_concurrency({"CPU": 3.0}, threads=1) == 2  # the local Ray: 2 cores + 1
    assert default_concurrency({"CPU": 2.0}, threads=1) == 1
    assert default_concurrency({"CPU": 9.0}, threads=2) == 4
    assert default_concurrency({"CPU": 1.0}, threads=1) == 1


def test_the_champions_come_from_serve_config(tmp_path):
    assert batch_score.champion("emotion", batch_score.REPO_ROOT / "serve_config.yaml")
    config = tmp_path / "serve.yaml"
    config.write_text(
        "applications:\n- deployments:\n  - name: Difficulty\n    user_config:\n"
        "      model_version: v7\n"
    )
    assert batch_score.champion("difficulty", config) == "v7"
    with pytest.raises(LookupError):
        batch_score.champion("emotion", config)


def test_thresholds_are_overridden_by_name():
    assert batch_score.parse_thresholds(["max_ece=0.1", "min_answers=3"]) == {
        "max_ece": 0.1,
        "min_answers": 3.0,
    }
    with pytest.raises(argparse.ArgumentTypeError):
        batch_score.parse_thresholds(["max_ece"])


def test_throughput_ratio_is_the_job_over_the_faster_raw_run():
    raw = {"threads": {}, "best_rows_per_s": 100.0}
    out = batch_score.throughput({"seconds": 10.0}, raw, rows=900)
    assert out["job"]["rows_per_s"] == pytest.approx(90.0)
    assert out["ratio"] == pytest.approx(0.9) and out["meets_required_ratio"]
    assert "ratio" not in batch_score.throughput({"seconds": 1.0}, None, rows=5)


def test_the_scoring_stage_is_timed_from_its_input_being_ready():
    stages = [
        {"operator": "ReadParquet", "first_start_s": 0.0, "last_end_s": 2.0, "rows": 10},
        {"operator": "MapBatches(Scorer)", "first_start_s": 5.0, "last_end_s": 9.0, "rows": 800},
        {"operator": "Write", "first_start_s": 7.0, "last_end_s": 10.0, "rows": 2},
    ]
    stage = batch_throughput.scoring_stage(stages, "Scorer", ready_s=0.5)
    assert stage["actor_wait_s"] == pytest.approx(3.0)  # after the read, not the driver's part
    assert stage["rows_per_s"] == pytest.approx(200.0) and stage["after_s"] == pytest.approx(1.0)
    assert batch_throughput.scoring_stage(stages, "Nope", ready_s=0.0) is None
    raw = {"best_rows_per_s": 400.0, "in_process": {"rows_per_s": 200.0}}
    out = batch_throughput.throughput({"seconds": 8.0, "scoring_stage": stage}, raw, rows=800)
    assert out["ratio"] == pytest.approx(0.25) and not out["meets_required_ratio"]
    assert out["scoring_stage_ratio"] == pytest.approx(0.5)
    assert out["ratio_to_in_process"] == pytest.approx(0.5)
