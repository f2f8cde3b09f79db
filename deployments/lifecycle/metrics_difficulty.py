"""Online metrics of difficulty versions: the learner's answer to an exercise scores the
p_correct that the version predicted for that item on that turn.

A served version is scored on the turns it served; a shadow version on the same answers,
through the predictions it made for those turns, so a shadow and the version serving beside it
are compared label for label (``vs_served``: a paired difference, far tighter than comparing two
means over different learners).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.lifecycle.outcomes import Delta, Label, Outcomes, make_delta, served_version
from deployments.lifecycle.stats import (
    Interval,
    MeanEstimate,
    Proportion,
    auc_estimate,
    bootstrap_interval,
    interval_less,
    mean_estimate,
    paired_greater,
    welch_greater,
    wilson,
)

MODEL = "difficulty"
# A prediction of exactly 0 or 1 that turns out wrong would make the mean loss infinite and
# hide everything else; clipped, it costs at most -log(1e-6) = 13.8, as scikit-learn does.
EPS = 1e-6
N_BINS = 10


class CalibrationBin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    mean_p: float
    accuracy: Proportion  # its n is the bin's count


class DifficultyMetrics(BaseModel):
    """How well one version's p_correct matched the answers that followed."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["difficulty"] = "difficulty"
    turns: int = Field(description="Turns with this version's predictions (served or shadow).")
    labels: int = Field(description="Answers to an item this version predicted on their turn.")
    log_loss: MeanEstimate | None = None
    auc: Interval | None = None  # Hanley-McNeil interval; None unless both outcomes occurred
    ece: Interval | None = None  # 10 equal-width bins, bootstrap interval
    calibration: list[CalibrationBin] = Field(default_factory=list)  # non-empty bins only
    mean_p: MeanEstimate | None = None
    accuracy: Proportion | None = None  # share of labels correct: compare with mean_p
    vs_served: dict[str, MeanEstimate] = Field(
        default_factory=dict,
        description="Shadow only, per version that served the turns: this version's log-loss "
        "minus the served version's, label by label (negative: the shadow predicts better).",
    )


def _p_for(predictions: list[dict] | None, item_id: str) -> float | None:
    for prediction in predictions or []:
        if prediction.get("item_id") == item_id:
            return float(prediction["p_correct"])
    return None


def log_losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))


def expected_calibration_error(p: np.ndarray, y: np.ndarray) -> float:
    """Sum over 10 equal-width bins of (bin share) * |mean p - accuracy|."""
    bins = np.minimum((p * N_BINS).astype(int), N_BINS - 1)
    # Per bin, |sum p - sum y| / n is |mean p - accuracy| weighted by the bin's share.
    sum_p = np.bincount(bins, weights=p, minlength=N_BINS)
    sum_y = np.bincount(bins, weights=y, minlength=N_BINS)
    return float(np.abs(sum_p - sum_y).sum() / len(p))


def score(p: list[float], y: list[bool], turns: int) -> DifficultyMetrics:
    """The metrics of predictions ``p`` against outcomes ``y``."""
    if not p:
        return DifficultyMetrics(turns=turns, labels=0)
    probs = np.asarray(p, dtype=np.float64)
    outcomes = np.asarray(y, dtype=np.float64)
    bins = np.minimum((probs * N_BINS).astype(int), N_BINS - 1)
    calibration = []
    for b in range(N_BINS):
        mask = bins == b
        if mask.any():
            calibration.append(
                CalibrationBin(
                    low=b / N_BINS,
                    high=(b + 1) / N_BINS,
                    mean_p=float(probs[mask].mean()),
                    accuracy=wilson(int(outcomes[mask].sum()), int(mask.sum())),
                )
            )
    n = len(p)

    def ece_resample(rng: np.random.Generator) -> float:
        index = rng.integers(0, n, n)
        return expected_calibration_error(probs[index], outcomes[index])

    ece = expected_calibration_error(probs, outcomes)
    return DifficultyMetrics(
        turns=turns,
        labels=n,
        log_loss=mean_estimate(log_losses(probs, outcomes).tolist()),
        auc=auc_estimate(p, y),
        ece=bootstrap_interval(ece_resample, ece, n),
        calibration=calibration,
        mean_p=mean_estimate(p),
        accuracy=wilson(int(outcomes.sum()), n),
    )


def _labels_by_turn(outcomes: Outcomes) -> dict[str, list[Label]]:
    by_turn: dict[str, list[Label]] = {}
    for label in outcomes.labels:
        by_turn.setdefault(label.turn.turn_id, []).append(label)
    return by_turn


def served(outcomes: Outcomes) -> dict[str, DifficultyMetrics]:
    """Per version, its predictions on the turns it served against the answers to them."""
    turns: dict[str, int] = {}
    for turn in outcomes.turns:
        version = served_version(turn, MODEL)
        if version is not None and turn.difficulty.get("predictions"):
            turns[version] = turns.get(version, 0) + 1
    pairs: dict[str, tuple[list[float], list[bool]]] = {v: ([], []) for v in turns}
    for label in outcomes.labels:
        version = served_version(label.turn, MODEL)
        p = _p_for(label.turn.difficulty.get("predictions"), label.item_id)
        if version is None or p is None:  # an item the turn did not predict: nothing to score
            continue
        pairs[version][0].append(p)
        pairs[version][1].append(label.correct)
    return {v: score(*pairs[v], turns=turns[v]) for v in turns}


def shadow(outcomes: Outcomes) -> dict[str, DifficultyMetrics]:
    """Per shadow version, its predictions for the turns it shadowed against the same answers
    that score the served version."""
    labels = _labels_by_turn(outcomes)
    turns: dict[str, int] = {}
    pairs: dict[str, tuple[list[float], list[bool]]] = {}
    paired: dict[str, dict[str, list[float]]] = {}
    for output in outcomes.shadows:
        if output.model != MODEL:
            continue
        version = output.version
        turns[version] = turns.get(version, 0) + 1
        ps, ys = pairs.setdefault(version, ([], []))
        for label in labels.get(output.turn_id, []):
            p = _p_for(output.output.get("predictions"), label.item_id)
            if p is None:
                continue
            ps.append(p)
            ys.append(label.correct)
            served_p = _p_for(label.turn.difficulty.get("predictions"), label.item_id)
            if served_p is not None:
                y = np.array([float(label.correct)])
                diff = log_losses(np.array([p]), y) - log_losses(np.array([served_p]), y)
                paired.setdefault(version, {}).setdefault(output.served_version, []).append(
                    float(diff[0])
                )
    reports = {}
    for version, (ps, ys) in pairs.items():
        report = score(ps, ys, turns=turns[version])
        report.vs_served = {
            served_v: estimate
            for served_v, diffs in paired.get(version, {}).items()
            if (estimate := mean_estimate(diffs)) is not None
        }
        reports[version] = report
    return reports


def compare(
    champion: DifficultyMetrics | None,
    candidate: DifficultyMetrics | None,
    *,
    champion_version: str,
    alpha: float,
) -> list[Delta]:
    """Log-loss (the guardrail's outcome), AUC and ECE of the candidate against the champion.

    Log-loss is tested label for label (paired t) when the candidate is a shadow of the
    champion, else with Welch's t over the two versions' labels; AUC with a z-test on the
    Hanley-McNeil errors (conservative for a shadow, whose AUC shares the champion's labels).
    """
    if champion is None or candidate is None:
        return []
    deltas = []
    paired = candidate.vs_served.get(champion_version)
    if paired is not None and paired.n >= 2:
        p_value, test = paired_greater(paired), "paired t"
    elif champion.log_loss and candidate.log_loss:
        p_value, test = welch_greater(champion.log_loss, candidate.log_loss), "welch t"
    else:
        p_value, test = None, ""
    deltas.append(
        make_delta("log_loss", champion.log_loss, candidate.log_loss, False, p_value, test, alpha)
    )
    if champion.auc and candidate.auc:
        p_auc = interval_less(champion.auc, candidate.auc)
        deltas.append(make_delta("auc", champion.auc, candidate.auc, True, p_auc, "z", alpha))
    if champion.ece and candidate.ece:
        deltas.append(make_delta("ece", champion.ece, candidate.ece, False, None, "", alpha))
    return deltas
