"""The stacked ensemble: a small logistic regression over the base models' leak-free logits.

Features per row: each base model's logit (of its served, calibrated probability), and
``log(1 + history_len)`` (how much of the learner the bases have seen: neural models and the
feature model disagree most on short histories); optionally each logit times that log-length,
kept only if it lowers the log loss of a student-grouped cross-validation *within* ``valid_k``.

Leak-free by construction: the bases were trained on ``train_k`` (epochs, temperatures and C
chosen on ``valid_k``), the stack is fitted on ``valid_k`` only, and ``test_k`` is measured once,
never fitted. The valid probabilities returned are out-of-fold (each valid student predicted by
a stack fitted on the other valid students), so they are honest too. The stack's own fit is its
calibration (log loss on valid), so its ECE is a calibrated figure like the bases' ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from models.common.calibration import reliability
from pipelines.difficulty.evaluate import binary_metrics
from pipelines.difficulty.fold_predictions import FoldPredictions, SplitPredictions

# Weak L2 only: a handful of features fitted on tens of thousands of rows.
STACK_C = 1.0
INNER_FOLDS = 5
PROB_CLIP = 1e-6


def logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, PROB_CLIP, 1 - PROB_CLIP)
    return np.log(p / (1 - p))


def check_aligned(parts: Mapping[str, SplitPredictions]) -> SplitPredictions:
    """The first of ``parts`` after checking that all have the same rows (labels, history)."""
    names = list(parts)
    first = parts[names[0]]
    for name in names[1:]:
        other = parts[name]
        if not (
            np.array_equal(other.labels, first.labels)
            and np.array_equal(other.history_len, first.history_len)
        ):
            raise ValueError(
                f"{name}'s predictions are not row-aligned with {names[0]}'s "
                f"({len(other)} vs {len(first)} rows): not the same split or not canonical order"
            )
    return first


def stack_features(parts: Mapping[str, SplitPredictions], *, interactions: bool) -> np.ndarray:
    """Rows x features: each base's logit (in ``parts``' order), log(1 + history length), and
    with ``interactions`` each logit times the log-length."""
    reference = check_aligned(parts)
    logits = [logit(p.probs) for p in parts.values()]
    log_history = np.log1p(reference.history_len.astype(np.float64))
    columns = [*logits, log_history]
    if interactions:
        columns += [z * log_history for z in logits]
    return np.column_stack(columns)


def feature_names(bases: list[str], *, interactions: bool) -> list[str]:
    names = [f"logit_{b}" for b in bases] + ["log1p_history"]
    return names + ([f"logit_{b}*log1p_history" for b in bases] if interactions else [])


def new_regression() -> LogisticRegression:
    return LogisticRegression(C=STACK_C, max_iter=1000)


def out_of_fold(x: np.ndarray, labels: np.ndarray, students: np.ndarray) -> np.ndarray:
    """P(correct) for every row from a stack fitted on the other students' rows."""
    n_groups = len(np.unique(students))
    probs = np.zeros(len(labels))
    for fit_rows, held_rows in GroupKFold(n_splits=min(INNER_FOLDS, n_groups)).split(
        x, labels, students
    ):
        model = new_regression().fit(x[fit_rows], labels[fit_rows])
        probs[held_rows] = model.predict_proba(x[held_rows])[:, 1]
    return probs


@dataclass
class StackChoice:
    interactions: bool
    valid_out_of_fold: np.ndarray  # the chosen variant's out-of-fold valid probabilities
    scores: dict[str, dict[str, float]]  # variant -> out-of-fold valid log loss and AUC


def choose_variant(valid: Mapping[str, SplitPredictions]) -> StackChoice:
    """With or without the interactions, whichever has the lower out-of-fold valid log loss."""
    reference = check_aligned(valid)
    students = reference.student_index()
    scores, oof = {}, {}
    for interactions in (False, True):
        x = stack_features(valid, interactions=interactions)
        oof[interactions] = out_of_fold(x, reference.labels, students)
        metrics = binary_metrics(reference.labels, oof[interactions])
        scores["with interactions" if interactions else "plain"] = {
            "log_loss": metrics["log_loss"],
            "auc": metrics["auc"],
        }
    chosen = scores["with interactions"]["log_loss"] < scores["plain"]["log_loss"]
    return StackChoice(chosen, oof[chosen], scores)


def fit_predict_stack(bases: Mapping[str, FoldPredictions]) -> FoldPredictions:
    """Fit the stack on the bases' valid predictions, predict their test rows.

    ``bases``: model name -> that model's predictions for one (dataset, fold), all row-aligned.
    Metrics carry the keys ``training.fit_and_test`` uses for the test figures (no per-row
    leaky AUC: the stack only sees leak-free inputs), plus the coefficients.
    """
    if not bases:
        raise ValueError("a stack needs at least one base model's predictions")
    started = time.perf_counter()
    names = list(bases)
    valid = {name: bases[name].valid for name in names}
    test = {name: bases[name].test for name in names}
    valid_ref, test_ref = check_aligned(valid), check_aligned(test)
    # A few features: BLAS threads only spin (on a loaded 2-core machine, 10-30x slower).
    with threadpool_limits(limits=1):
        choice = choose_variant(valid)
        model = new_regression().fit(
            stack_features(valid, interactions=choice.interactions), valid_ref.labels
        )
    test_probs = model.predict_proba(stack_features(test, interactions=choice.interactions))[:, 1]
    test_metrics = binary_metrics(test_ref.labels, test_probs)
    calibration = reliability(test_probs, test_ref.labels)
    coefficients = dict(
        zip(feature_names(names, interactions=choice.interactions), model.coef_[0], strict=True)
    )
    metrics: dict[str, Any] = {
        "protocol": "leak-free: a logistic regression over the base models' leak-free logits, "
        "fitted on valid only",
        "bases": names,
        "interactions": choice.interactions,
        "variant_scores_valid_out_of_fold": choice.scores,
        "coefficients": {k: float(v) for k, v in coefficients.items()},
        "intercept": float(model.intercept_[0]),
        "test_auc": test_metrics["auc"],
        "test_acc": test_metrics["acc"],
        "test_log_loss": test_metrics["log_loss"],
        "test_rows": test_metrics["rows"],
        "test_students": int(test_ref.student_index()[-1] + 1) if len(test_ref) else 0,
        "test_per_row_leaky_auc": None,
        "test_ece": calibration["ece"],
        "test_ece_uncalibrated": None,  # the fit on valid is the calibration
        "test_reliability": calibration,
        "valid_auc": binary_metrics(valid_ref.labels, choice.valid_out_of_fold)["auc"],
        "valid_rows": len(valid_ref),
        "best_epoch": None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return FoldPredictions(
        valid=SplitPredictions(valid_ref.labels, choice.valid_out_of_fold, valid_ref.history_len),
        test=SplitPredictions(test_ref.labels, test_probs, test_ref.history_len),
        metrics=metrics,
    )
