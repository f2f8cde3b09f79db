"""Evaluating the at-risk model on held-out students of the KT datasets (no Ray needed).

Protocol. Each student's rows become attempts (consecutive rows of one problem are one attempt,
under its first skill: a multi-skill problem counts once, so a cut never splits it). At every
10th attempt from the 10th on, while 10 more follow (a "cut"), the model reads the attempts
before the cut (``risk_features``) and predicts whether the next 10 attempts' accuracy is below
0.5. The baseline on the same points ranks by 1 - the accuracy of the last 10 attempts.

Folds: fold k's test students are held out; its training students (train_k + valid_k) are
exactly the other folds' test students (data README), so each student's points are computed
once, tagged with the fold that tests them, and fold k trains on the other four folds' points.
Metrics per fold: ROC AUC and precision at 10% (of the 10% of a fold's points ranked riskiest,
the share whose next 10 attempts' accuracy was below 0.5; ties at the cut-off count at their
mean), compared across the five folds by a paired t-test on the differences.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score, roc_curve

from models.difficulty.data import StudentSequence, load_split, read_akt_file, split_path
from models.difficulty.risk import LABEL_THRESHOLD, LABEL_WINDOW, RiskModel
from models.difficulty.risk_features import BLOCK, Answer, AnswerFeatures

log = logging.getLogger("pipelines.difficulty.at_risk")
FOLDS = (1, 2, 3, 4, 5)
TOP_FRACTION = 0.10
CURVE_FRACTIONS = tuple(round(f, 3) for f in np.linspace(0.01, 0.5, 50))
ROC_POINTS = 101


@dataclass
class Points:
    """Cut points of a set of students: features, the next window's accuracy, the baseline."""

    x: np.ndarray  # [N, F]
    next_accuracy: np.ndarray  # [N]
    baseline: np.ndarray  # [N]: 1 - accuracy of the last 10 attempts
    students: int

    @property
    def at_risk(self) -> np.ndarray:
        return (self.next_accuracy < LABEL_THRESHOLD).astype(np.int64)

    @classmethod
    def concat(cls, parts: Sequence[Points]) -> Points:
        return cls(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.next_accuracy for p in parts]),
            np.concatenate([p.baseline for p in parts]),
            sum(p.students for p in parts),
        )


def attempts(sequence: StudentSequence) -> list[Answer]:
    """The student's attempts in order (module docstring: one per run of a problem's rows)."""
    out: list[Answer] = []
    for t, (item, skill, correct) in enumerate(
        zip(sequence.item_ids, sequence.skill_ids, sequence.correct, strict=True)
    ):
        if t and item == sequence.item_ids[t - 1]:
            continue
        out.append(Answer(skill_id=skill, correct=bool(correct), item_id=item))
    return out


def cut_points(answers: Sequence[Answer]) -> Iterator[tuple[int, np.ndarray]]:
    """(cut, features from the answers before it) at every cut of the module docstring."""
    state = AnswerFeatures()
    for t, answer in enumerate(answers):
        if t and t % BLOCK == 0 and t + LABEL_WINDOW <= len(answers):
            yield t, state.features()
        state.add(answer)


def student_points(sequences: Sequence[StudentSequence]) -> Points:
    rows, nexts, base = [], [], []
    for sequence in sequences:
        answers = attempts(sequence)
        correct = np.array([a.correct for a in answers], dtype=np.float64)
        for t, features in cut_points(answers):
            rows.append(features)
            nexts.append(correct[t : t + LABEL_WINDOW].mean())
            base.append(1.0 - correct[t - BLOCK : t].mean())
    width = len(AnswerFeatures().features())
    x = np.array(rows, dtype=np.float64).reshape(-1, width)
    return Points(x, np.array(nexts), np.array(base), len(sequences))


def load_fold_points(
    data_dir: Path, dataset: str, *, limit: int | None = None
) -> tuple[dict[int, Points], int]:
    """Each fold's held-out students' points, and how many of train_k + valid_k's students no
    test fold holds (1 of 3,321 in assist2009_pid, 3 of 267 in statics: left out of training
    here); refuses folds that differ from the README's by more. ``limit``: the first students
    of each fold only (a smoke run; the fold check is then skipped)."""
    points = {k: student_points(load_split(data_dir, dataset, "test", k)[:limit]) for k in FOLDS}
    if limit is not None:
        return points, 0
    total = sum(p.students for p in points.values())
    lines = 4 if dataset.endswith("_pid") else 3
    unplaced = 0
    for k in FOLDS:
        trained = sum(
            len(read_akt_file(split_path(data_dir, dataset, s, k), lines_per_student=lines))
            for s in ("train", "valid")
        )
        unplaced = max(unplaced, trained - (total - points[k].students))
        if not 0 <= trained - (total - points[k].students) <= 0.02 * trained:
            raise ValueError(
                f"{dataset} fold {k}: train+valid has {trained} students, the other test folds "
                f"{total - points[k].students}: the folds are not the README's"
            )
    return points, unplaced


# ---- metrics ----------------------------------------------------------------------------------


def precision_at(scores: np.ndarray, labels: np.ndarray, fraction: float) -> float:
    """Share of positives among the ``fraction`` of points ranked highest, ties at the cut-off
    counted at their mean (the expectation over random tie-breaking), so a score with few
    distinct values (the baseline's 11) is neither helped nor hurt by the order of the rows."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError("scores and labels must be non-empty and of one shape")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, int(round(fraction * scores.size)))
    cutoff = np.sort(scores)[::-1][k - 1]
    above, tied = scores > cutoff, scores == cutoff
    taken = k - int(above.sum())
    positives = labels[above].sum() + taken * labels[tied].mean()
    return float(positives / k)


def score_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "precision_at_10": precision_at(scores, labels, TOP_FRACTION),
    }


def paired(model: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Model minus baseline over the folds: mean, sd, paired t-test, folds won."""
    diff = np.asarray(model) - np.asarray(baseline)
    test = stats.ttest_rel(model, baseline)
    return {
        "mean_difference": float(diff.mean()),
        "sd_difference": float(diff.std(ddof=1)),
        "t": float(test.statistic),
        "p_value": float(test.pvalue),
        "folds_model_better": int((diff > 0).sum()),
        "folds": len(diff),
    }


def _curves(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    fpr, tpr, _ = roc_curve(labels, scores)
    grid = np.linspace(0, 1, ROC_POINTS)
    return {
        "precision_at": [precision_at(scores, labels, f) for f in CURVE_FRACTIONS],
        "roc_tpr": np.interp(grid, fpr, tpr).round(4).tolist(),
    }


# ---- the evaluation ---------------------------------------------------------------------------


def evaluate_dataset(
    data_dir: Path,
    dataset: str,
    *,
    reference: bool = True,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[dict[str, Any], dict[int, RiskModel]]:
    """Per-fold metrics of the model, the baseline (and a gradient-boosting reference)."""
    started = time.perf_counter()
    points, unplaced = load_fold_points(data_dir, dataset, limit=limit)
    log.info("%s: %d points in %.1fs", dataset, sum(len(p.x) for p in points.values()),
             time.perf_counter() - started)  # fmt: skip
    folds, models, pooled = [], {}, {"labels": [], "model": [], "baseline": []}
    for k in FOLDS:
        train = Points.concat([points[j] for j in FOLDS if j != k])
        test = points[k]
        model = RiskModel.fit(train.x, train.at_risk, dataset=dataset, fold=k)
        models[k] = model
        scores = model.predict(test.x)
        row = {
            "fold": k,
            "test_students": test.students,
            "test_points": len(test.x),
            "train_points": len(train.x),
            "positive_rate": float(test.at_risk.mean()),
            "model": score_metrics(scores, test.at_risk),
            "baseline": score_metrics(test.baseline, test.at_risk),
        }
        if reference:
            gbm = HistGradientBoostingClassifier(random_state=seed).fit(train.x, train.at_risk)
            row["reference_gbm"] = score_metrics(gbm.predict_proba(test.x)[:, 1], test.at_risk)
        folds.append(row)
        pooled["labels"].append(test.at_risk)
        pooled["model"].append(scores)
        pooled["baseline"].append(test.baseline)
        log.info("%s fold %d: %s", dataset, k, {n: row[n] for n in ("model", "baseline")})
    labels = np.concatenate(pooled["labels"])
    arms = ["model", "baseline"] + (["reference_gbm"] if reference else [])
    result = {
        "folds": folds,
        "mean": {
            arm: {m: float(np.mean([f[arm][m] for f in folds])) for m in folds[0]["model"]}
            for arm in arms
        },
        "paired_model_vs_baseline": {
            m: paired([f["model"][m] for f in folds], [f["baseline"][m] for f in folds])
            for m in folds[0]["model"]
        },
        "points": int(labels.size),
        "students": sum(p.students for p in points.values()),
        "positive_rate": float(labels.mean()),
        "train_valid_students_in_no_test_fold": unplaced,
        "curves": {
            arm: _curves(np.concatenate(pooled[arm]), labels) for arm in ("model", "baseline")
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result, models
