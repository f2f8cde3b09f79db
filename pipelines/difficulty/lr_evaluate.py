"""``pipelines.difficulty.evaluate`` for an LR tracer's artifact (architecture ``lr``).

The same protocol and report keys as for the networks where they apply: every row predicted
leak-free from the learner's state before its attempt, as ``LRTracer.trace`` serves it (the
counts read up to the tracer's ``max_history`` rows, the window moving as in serving), rows of
skills the vocabulary lacks at their prior; AUC, ACC, log loss at the artifact's temperature;
the test ECE at temperature 1 and at the valid-fitted temperature (the artifact's, fitted on
valid when trained); the skill-prior baseline on the same rows. There is no per-row ("leaky")
figure: the LR tracer has no per-row mode (its features always read the state before the
attempt), so ``per_row_leaky_auc`` is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.common.calibration import fit_temperature, reliability
from models.difficulty.data import StudentSequence
from models.difficulty.lr_tracer import LRTracer
from models.difficulty.tracer_api import Interaction
from pipelines.difficulty.evaluate import binary_metrics, temperature_report


def served_logits(
    tracer: LRTracer, sequences: Sequence[StudentSequence]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, logits at temperature 1, prior) of every row in the canonical order; ``prior``
    is the served prior on rows of skills the vocabulary lacks, NaN elsewhere."""
    indptr, indices, data = [0], [], []
    for seq in sequences:
        history = [
            Interaction(i, s, bool(c))
            for i, s, c in zip(seq.item_ids, seq.skill_ids, seq.correct, strict=True)
        ]
        for cols, vals in tracer.trace_rows(history):
            indices += cols
            data += vals
            indptr.append(len(indices))
    matrix = sp.csr_matrix(
        (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int32), indptr),
        shape=(len(indptr) - 1, tracer.spec.num_features),
    )
    labels = np.asarray([c for seq in sequences for c in seq.correct], dtype=np.int64)
    prior = np.asarray(
        [
            np.nan if tracer.vocab.has_skill(s) else tracer.priors.for_skill(s)
            for seq in sequences
            for s in seq.skill_ids
        ],
        dtype=np.float64,
    )
    return labels, tracer.model.raw_logits(matrix), prior


def _probs(logits: np.ndarray, prior: np.ndarray, temperature: float) -> np.ndarray:
    probs = 0.5 * (1.0 + np.tanh(0.5 * logits / temperature))
    unknown = ~np.isnan(prior)
    probs[unknown] = prior[unknown]
    return probs


def served_probabilities(tracer: LRTracer, sequences: Sequence[StudentSequence]) -> np.ndarray:
    """Every row's served P(correct) (the artifact's temperature, priors for unknown skills) in
    the canonical order: what the stacked ensemble reads of this member."""
    _, logits, prior = served_logits(tracer, sequences)
    return _probs(logits, prior, tracer.model.temperature)


def evaluate_lr(
    tracer: LRTracer, valid: Sequence[StudentSequence], test: Sequence[StudentSequence]
) -> dict[str, Any]:
    """The report's ``metrics`` (with its ``temperature`` block) for an LR tracer."""
    labels, logits, prior = served_logits(tracer, test)
    in_artifact = tracer.model.temperature
    served = _probs(logits, prior, in_artifact)
    metrics: dict[str, Any] = {"protocol": "leak_free_attempt", **binary_metrics(labels, served)}
    metrics["calibration"] = reliability(served, labels)
    metrics["students"] = len(test)
    metrics["unseen_skill_rows"] = sum(
        1 for seq in test for s in seq.skill_ids if not tracer.vocab.has_skill(s)
    )
    metrics["unseen_item_rows"] = sum(
        1 for seq in test for i in seq.item_ids if not tracer.vocab.has_item(i)
    )
    skill_prior = [tracer.priors.for_skill(s) for seq in test for s in seq.skill_ids]
    metrics["skill_prior_auc"] = binary_metrics(labels, np.asarray(skill_prior))["auc"]

    valid_labels, valid_logits, valid_prior = served_logits(tracer, valid)
    known = np.isnan(valid_prior)
    fitted = fit_temperature(valid_logits[known], valid_labels[known])
    applied = in_artifact if in_artifact != 1.0 else fitted
    source = (
        "artifact (fitted on valid when trained)"
        if in_artifact != 1.0
        else "fitted on valid here (the artifact keeps 1.0)"
    )
    uncalibrated = reliability(_probs(logits, prior, 1.0), labels)
    calibrated = reliability(_probs(logits, prior, applied), labels)
    metrics["temperature"] = temperature_report(
        in_artifact, fitted, applied, source, uncalibrated, calibrated
    )
    return metrics
