"""The LR fold fit on a small synthetic dataset: the FoldPredictions interface (canonical row
order, labels, history lengths), metrics, and evaluated predictions == the served tracer's.

Tolerance 1e-9: the same float64 model read through the sparse matrix and through per-row dot
products (sums in another order).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from models.difficulty.data import load_split
from models.difficulty.tracer_api import Interaction
from pipelines.difficulty.lr_fit import fit_fold, fit_predict_fold

DATASET = "toy_pid"


def write_student(rng: random.Random, index: int, *, extra_skill: bool) -> list[str]:
    """Four AKT-format lines; skill s's items are easier the more the student practised it."""
    items, skills, correct = [], [], []
    seen: dict[str, int] = {}
    for _ in range(rng.randint(5, 40)):
        skill = rng.choice(["1", "2", "3"] + (["9"] if extra_skill else []))
        item = f"{skill}{rng.randint(0, 4)}"
        p = min(0.9, 0.3 + 0.1 * seen.get(skill, 0))
        answer = int(rng.random() < p)
        seen[skill] = seen.get(skill, 0) + 1
        tags = [skill, "2"] if skill == "1" and rng.random() < 0.3 else [skill]  # multi-skill
        for tag in tags:
            items.append(item)
            skills.append(tag)
            correct.append(answer)
    return [
        f"{index},{1000 + index}",
        ",".join(items),
        ",".join(skills),
        ",".join(map(str, correct)),
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kt")
    rng = random.Random(0)
    (root / DATASET).mkdir()
    for split, students in [("train", 60), ("valid", 20), ("test", 20)]:
        lines = []
        for i in range(students):
            lines += write_student(rng, i, extra_skill=split == "test" and i % 5 == 0)
        (root / DATASET / f"{DATASET}_{split}1.csv").write_text("\n".join(lines) + "\n")
    return root


def test_fold_predictions_follow_the_canonical_order(data_dir: Path) -> None:
    predictions = fit_predict_fold(data_dir, DATASET, 1)
    for split, got in [("valid", predictions.valid), ("test", predictions.test)]:
        sequences = load_split(data_dir, DATASET, split, 1)
        assert np.array_equal(got.labels, np.concatenate([s.correct for s in sequences]))
        assert np.array_equal(
            got.history_len, np.concatenate([np.arange(len(s)) for s in sequences])
        )
        assert got.labels.dtype == np.int64 and got.history_len.dtype == np.int64
        assert got.probs.dtype == np.float64 and np.all((got.probs > 0) & (got.probs < 1))
    metrics = predictions.metrics
    for key in ("test_auc", "test_acc", "test_ece", "test_ece_uncalibrated", "valid_auc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["test_auc"] > 0.55  # the counts carry the synthetic learning signal
    assert metrics["temperature"] > 0 and metrics["C"] in [c["C"] for c in metrics["c_search"]]


def test_evaluated_predictions_are_what_the_tracer_serves(data_dir: Path) -> None:
    fit = fit_fold(data_dir, DATASET, 1, limit_students=10, cs=(0.1,))
    test = load_split(data_dir, DATASET, "test", 1)[:10]
    offset = 0
    for seq in test:
        history = [
            Interaction(i, s, bool(c))
            for i, s, c in zip(seq.item_ids, seq.skill_ids, seq.correct, strict=True)
        ]
        served = [x.p_correct for x in fit.tracer.trace(history)]
        evaluated = fit.predictions.test.probs[offset : offset + len(seq)]
        assert served == pytest.approx(evaluated.tolist(), abs=1e-9)
        offset += len(seq)
    assert any("9" in seq.skill_ids for seq in test)  # rows of a skill train lacks: priors


def test_train_registers_an_lr_artifact_that_load_tracer_serves(
    data_dir: Path, tmp_path: Path
) -> None:
    from models.common.registry import ModelRegistry
    from models.difficulty.loader import load_tracer
    from models.difficulty.lr_tracer import LRTracer
    from pipelines.difficulty import train

    registry = tmp_path / "registry"
    argv = ["--model", "lr", "--data", str(data_dir), "--dataset", DATASET, "--lr-c", "0.1"]
    result = train.main([*argv, "--registry", str(registry), "--allow-dirty"])
    artifact = ModelRegistry(registry).load("difficulty", result["version"])
    assert artifact.metadata.config["model"] == "lr"
    assert artifact.metadata.metrics["test_auc"] == pytest.approx(result["metrics"]["test_auc"])
    tracer = load_tracer(artifact.path)
    assert isinstance(tracer, LRTracer)
    assert 0.0 < tracer.predict([], [("10", "1")])[0].p_correct < 1.0


def test_evaluate_reports_an_lr_artifact_like_a_network(data_dir: Path, tmp_path: Path) -> None:
    from pipelines.difficulty import evaluate, train

    registry = tmp_path / "registry"
    argv = ["--data", str(data_dir), "--dataset", DATASET, "--registry", str(registry)]
    version = train.main(["--model", "lr", "--lr-c", "0.1", "--allow-dirty", *argv])["version"]
    out = tmp_path / "report.json"
    report = evaluate.main([*argv, "--version", version, "--out", str(out)])
    metrics = report["metrics"]
    for key in ("auc", "acc", "log_loss", "skill_prior_auc"):
        assert 0.0 <= metrics[key] <= 1.0 + 1e-9
    temperature = metrics["temperature"]
    assert temperature["applied"] == pytest.approx(temperature["in_artifact"])
    assert {"test_ece_uncalibrated", "test_ece_calibrated", "fitted_on_valid"} <= set(temperature)
    assert metrics["rows"] == sum(len(s) for s in load_split(data_dir, DATASET, "test", 1))
    # The evaluated test AUC is the one the fit registered (the same served predictions).
    assert metrics["auc"] == pytest.approx(report["registered_metrics"]["test_auc"], abs=1e-9)
    assert out.is_file() and out.with_name("report_reliability.png").is_file()
