"""The cross-validation harness end to end on a tiny on-disk dataset, without Ray: canonical
row order of the neural models' predictions, every run's .npz, a stand-in feature model, the
stack after its bases, and the one report over all datasets.

Tolerances: the same network's probabilities for one student, alone or batched with others
(other padding, other batch order): a few float32 ulps, 1e-6 (as in test_tracer.py). Metrics
recomputed from saved float64 arrays: the same arithmetic, 1e-9.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from models.difficulty.data import StudentSequence, load_split
from pipelines.difficulty.evaluate import binary_metrics, predict_rows
from pipelines.difficulty.fold_predictions import canonical_labels

from .test_tracer import small_tracer


def random_students(n: int, seed: int, *, min_len: int = 3, max_len: int = 30):
    """Learners over the small tracer's items a-d (b: the multi-skill item, skills 1-3)."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        items, skills = [], []
        for _ in range(rng.randint(min_len, max_len)):
            item = rng.choice("abcd")
            for skill in ["1", "2", "3"] if item == "b" else [rng.choice("123")]:
                items.append(item)
                skills.append(skill)
        correct = [int(rng.random() < 0.65) for _ in items]
        out.append(StudentSequence(f"{s}", items, skills, correct))
    return out


@pytest.mark.parametrize("architecture", ["dkt", "akt"])
def test_predict_rows_returns_canonical_order(architecture: str) -> None:
    """Windows are batched by length; rows still come back student by student, each student's
    predictions the ones it gets alone (window 8: students span several windows)."""
    tracer = small_tracer(architecture=architecture)
    students = random_students(9, seed=3)
    kwargs = {"window": 8, "batch_size": 4}
    labels, probs = predict_rows(tracer.model, tracer.vocab, tracer.priors, students, **kwargs)
    np.testing.assert_array_equal(labels, canonical_labels(students))
    alone = [
        predict_rows(tracer.model, tracer.vocab, tracer.priors, [s], **kwargs)[1] for s in students
    ]
    np.testing.assert_allclose(probs, np.concatenate(alone), atol=1e-6)


# ------------------------------------------------------------------------------ the harness
DATASET = "toy_pid"
FAST_NEURAL = ["--epochs", "1", "--hidden-size", "8", "--embedding-dim", "4", "--batch-size", "16"]


def write_toy_dataset(root: Path, folds: tuple[int, ...] = (1,)) -> Path:
    """AKT-format files (header, items, skills, responses) for ``folds``; 25-30 students each."""
    directory = root / DATASET
    directory.mkdir(parents=True)
    for fold in folds:
        for k, split in enumerate(("train", "valid", "test")):
            students = random_students(25 + k * 2, seed=fold * 10 + k)
            lines = []
            for s in students:
                lines += [f"{s.student},{100 + int(s.student)}", ",".join(s.item_ids),
                          ",".join(s.skill_ids), ",".join(map(str, s.correct))]  # fmt: skip
            (directory / f"{DATASET}_{split}{fold}.csv").write_text("\n".join(lines) + "\n")
    return root


def skill_mean_model(dataset, fold, *, data, limit_students, extra, shuffle=False):
    """A stand-in for the feature model: each row's skill's training mean plus a little noise."""
    from models.difficulty.data import Priors
    from pipelines.difficulty.fold_predictions import FoldPredictions, SplitPredictions

    priors = Priors.compute(load_split(data, dataset, "train", fold)[:limit_students])
    rng = np.random.default_rng(fold)
    parts = {}
    for split in ("valid", "test"):
        students = load_split(data, dataset, split, fold)[:limit_students]
        probs = np.array([priors.for_skill(k) for s in students for k in s.skill_ids])
        probs = np.clip(probs + rng.normal(0, 0.05, len(probs)), 0.01, 0.99)
        if shuffle:
            students = students[::-1]  # wrong order: the harness must notice
        parts[split] = SplitPredictions.for_split(students, probs)
    return FoldPredictions(parts["valid"], parts["test"], {"test_ece_uncalibrated": None})


def harness_config(tmp_path: Path, models: list[str], **overrides):
    from pipelines.difficulty.cross_validate import HarnessConfig

    return HarnessConfig(
        datasets=[DATASET], models=models, folds=[1], data=tmp_path / "kt",
        out=tmp_path / "reports" / "cv.json", extra=FAST_NEURAL,
        predictions_dir=tmp_path / "predictions", **overrides,
    )  # fmt: skip


def test_harness_runs_bases_then_the_stack_and_writes_one_report(tmp_path: Path) -> None:
    from pipelines.difficulty.cross_validate import RUNNERS, local_executor, run_harness
    from pipelines.difficulty.fold_predictions import load_fold_predictions

    write_toy_dataset(tmp_path / "kt")
    runners = {"dkt": RUNNERS["dkt"], "lr": skill_mean_model}
    config = harness_config(tmp_path, ["dkt", "lr", "stack"])
    report = run_harness(config, runners=runners, executor=local_executor)

    test_students = load_split(tmp_path / "kt", DATASET, "test", 1)
    for model in ("dkt", "lr", "stack"):
        saved = load_fold_predictions(tmp_path / "predictions" / DATASET / f"{model}_fold1.npz")
        np.testing.assert_array_equal(saved.test.labels, canonical_labels(test_students))
        run = next(r for r in report["runs"] if r["model"] == model)
        recomputed = binary_metrics(saved.test.labels, saved.test.probs)["auc"]
        assert run["test_auc"] == pytest.approx(recomputed, abs=1e-9)
        assert 0 <= run["test_ece"] <= 1  # every model has its calibrated ECE
    summary = report["summary"][DATASET]
    assert set(summary) == {"dkt", "lr", "stack"}
    assert "auc_gain_over_dkt" in summary["stack"]
    assert summary["stack"]["auc_gain_over_best_base"]["base"] in ("dkt", "lr")
    assert report["complete"] and report["stack_bases"] == {"stack": ["dkt", "lr"]}
    on_disk = json.loads(config.out.read_text())
    assert [r["model"] for r in on_disk["runs"]] == ["dkt", "lr", "stack"]
    assert "| toy_pid | stack (folds 1) |" in config.out.with_suffix(".md").read_text()
    assert Path(report["reliability_png"]).is_file()

    # The stack alone, refitted from the saved base predictions: the same test predictions.
    again = run_harness(
        harness_config(tmp_path, ["stack"], stack_bases=["dkt", "lr"]),
        runners=runners,
        executor=local_executor,
    )
    assert [(r["model"], r["from_saved_predictions"]) for r in again["runs"]] == [
        ("dkt", True), ("lr", True), ("stack", False),
    ]  # fmt: skip
    assert again["summary"][DATASET]["stack"]["test_auc"]["mean"] == pytest.approx(
        summary["stack"]["test_auc"]["mean"], abs=1e-12
    )
    assert again["summary"][DATASET]["dkt"] == summary["dkt"]


def test_predictions_out_of_canonical_order_are_refused(tmp_path: Path) -> None:
    import functools

    from pipelines.difficulty.cross_validate import local_executor, run_harness

    write_toy_dataset(tmp_path / "kt")
    runners = {"lr": functools.partial(skill_mean_model, shuffle=True)}
    with pytest.raises(ValueError, match="canonical order"):
        run_harness(harness_config(tmp_path, ["lr"]), runners=runners, executor=local_executor)


def test_a_stack_base_neither_run_nor_saved_is_refused_before_any_run(tmp_path: Path) -> None:
    from pipelines.difficulty.cross_validate import local_executor, run_harness

    write_toy_dataset(tmp_path / "kt")
    config = harness_config(tmp_path, ["lr", "stack"], stack_bases=["dkt", "lr"])
    with pytest.raises(FileNotFoundError, match="dkt"):
        run_harness(config, runners={"dkt": None, "lr": skill_mean_model}, executor=local_executor)
    assert not (tmp_path / "predictions").exists()


def test_limited_runs_save_apart_from_full_runs(tmp_path: Path) -> None:
    from pipelines.difficulty.cross_validate import PREDICTIONS_DIR, parse_args

    config = parse_args(["--models", "dkt", "lr", "stack", "--limit-students", "60"])
    assert config.prediction_path("d", "lr", 2) == (
        PREDICTIONS_DIR.with_name("difficulty_cv_limit60") / "d" / "lr_fold2.npz"
    )
    assert parse_args([]).prediction_path("d", "dkt", 1) == PREDICTIONS_DIR / "d" / "dkt_fold1.npz"


def test_a_named_stack_is_fitted_on_its_own_bases_beside_the_full_one(tmp_path: Path) -> None:
    from pipelines.difficulty.cross_validate import local_executor, run_harness

    write_toy_dataset(tmp_path / "kt")
    runners = {"dkt": skill_mean_model, "lr": skill_mean_model}
    config = harness_config(tmp_path, ["dkt", "lr", "stack", "stack:lr"])
    report = run_harness(config, runners=runners, executor=local_executor)
    assert report["stack_bases"] == {"stack": ["dkt", "lr"], "stack:lr": ["lr"]}
    named = next(r for r in report["runs"] if r["model"] == "stack:lr")
    assert named["bases"] == ["lr"]
    summary = report["summary"][DATASET]
    assert summary["stack:lr"]["auc_gain_over_best_base"]["base"] == "lr"
    assert set(summary["stack"]["auc_gain_over_stacks"]) == {"stack:lr"}
