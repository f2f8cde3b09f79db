"""The stacked ensemble on synthetic base predictions: it combines, it is leak-free (test labels
never reach a fit), it refuses misaligned bases, and it keeps interactions only when they earn it.

Tolerances: the stack's paired AUC gain over each base here is ~0.02-0.03 on ~5,000 rows,
whose paired AUC noise is a few thousandths: asserting a 0.01 gain leaves room. Probabilities
compared for "unchanged" are the same float64 computation run twice: 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.difficulty.fold_predictions import FoldPredictions, SplitPredictions
from pipelines.difficulty.stacking import fit_predict_stack, stack_features


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def synthetic_split(rng: np.random.Generator, students: int, *, history_matters: bool) -> dict:
    """Labels from a latent skill; two bases each see it through independent noise. With
    ``history_matters`` base "a" is noisy on short histories and sharp on long ones."""
    lengths = rng.integers(5, 60, size=students)
    history = np.concatenate([np.arange(n) for n in lengths])
    latent = rng.normal(0.8, 1.5, size=len(history))
    labels = (rng.random(len(history)) < sigmoid(latent)).astype(np.int64)
    noise_a = 3.0 / (1 + history / 5) if history_matters else 1.0
    z_a = latent + rng.normal(size=len(history)) * noise_a
    z_b = latent + rng.normal(size=len(history)) * 1.0
    return {
        name: SplitPredictions(labels, sigmoid(z), history) for name, z in (("a", z_a), ("b", z_b))
    }


def bases(seed: int = 0, *, history_matters: bool = False) -> dict[str, FoldPredictions]:
    rng = np.random.default_rng(seed)
    valid = synthetic_split(rng, 150, history_matters=history_matters)
    test = synthetic_split(rng, 150, history_matters=history_matters)
    return {name: FoldPredictions(valid[name], test[name], {}) for name in ("a", "b")}


def test_the_stack_beats_each_base_on_test() -> None:
    folds = bases()
    stacked = fit_predict_stack(folds)
    labels = folds["a"].test.labels
    np.testing.assert_array_equal(stacked.test.labels, labels)
    for name, fold in folds.items():
        assert stacked.metrics["test_auc"] > roc_auc_score(labels, fold.test.probs) + 0.01, name
    assert set(stacked.metrics["coefficients"]) >= {"logit_a", "logit_b", "log1p_history"}
    assert stacked.metrics["test_ece"] < 0.05  # fitted by log loss on valid: calibrated


def test_test_labels_never_reach_a_fit() -> None:
    folds = bases()
    before = fit_predict_stack(folds).test.probs
    for fold in folds.values():
        fold.test.labels = 1 - fold.test.labels  # a leak would move the predictions
    after = fit_predict_stack(folds).test.probs
    np.testing.assert_allclose(after, before, atol=1e-12)


def test_valid_predictions_are_out_of_fold() -> None:
    """A valid student's prediction comes from stacks fitted without that student: flipping its
    labels moves the fits (and other students' predictions), never its own predictions."""
    folds = bases(history_matters=True)
    before = fit_predict_stack(folds)
    first = folds["a"].valid.student_index() == 0
    for fold in folds.values():
        fold.valid.labels = np.where(first, 1 - fold.valid.labels, fold.valid.labels)
    after = fit_predict_stack(folds)
    assert after.metrics["interactions"] == before.metrics["interactions"]
    np.testing.assert_allclose(after.valid.probs[first], before.valid.probs[first], atol=1e-12)
    assert np.abs(after.valid.probs[~first] - before.valid.probs[~first]).max() > 1e-6


def test_misaligned_bases_are_refused() -> None:
    folds = bases()
    other = bases(seed=1)
    folds["b"] = other["b"]
    with pytest.raises(ValueError, match="row-aligned"):
        fit_predict_stack(folds)


def test_interactions_are_kept_only_when_they_earn_it() -> None:
    assert fit_predict_stack(bases(history_matters=True)).metrics["interactions"] is True
    plain = fit_predict_stack(bases(history_matters=False)).metrics
    scores = plain["variant_scores_valid_out_of_fold"]
    chosen = "with interactions" if plain["interactions"] else "plain"
    assert scores[chosen]["log_loss"] == min(s["log_loss"] for s in scores.values())


def test_features_are_logits_then_log_history() -> None:
    part = SplitPredictions(np.array([1, 0]), np.array([0.5, 0.75]), np.array([0, 3]))
    x = stack_features({"a": part}, interactions=True)
    np.testing.assert_allclose(x[:, 0], [0.0, np.log(3.0)], atol=1e-12)
    np.testing.assert_allclose(x[:, 1], [0.0, np.log(4.0)], atol=1e-12)
    np.testing.assert_allclose(x[:, 2], x[:, 0] * x[:, 1], atol=1e-12)
