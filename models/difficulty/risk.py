"""Learners at risk: P(the next 10 answers' accuracy is below 0.5), with its reasons.

``RiskModel`` is a logistic regression on standardised ``risk_features.FEATURES`` (fitted with
scikit-learn, applied with numpy). A feature's contribution is its coefficient times its
standardised value: the log-odds it adds relative to the average training point. Contributions
are summed per ``REASONS`` group, and a group adding at least ``REASON_THRESHOLD`` log-odds
becomes a reason, phrased from the learner's own numbers ("accuracy 2 of the last 10").

Disengagement is a separate score from the turns (pace and emotion trend). The KT datasets have
neither timestamps nor emotions, so nothing labels disengagement: its weights (``DISENGAGEMENT``)
are set by hand, not fitted, and the README says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.difficulty.risk_features import (
    BLOCK,
    FEATURES,
    Answer,
    AnswerFeatures,
    TurnObservation,
    TurnSignals,
    turn_signals,
)

MODEL_FILE = "risk_model.json"
REGISTRY_NAME = "difficulty_risk"
LABEL_WINDOW = 10  # the label: accuracy of the next 10 answers ...
LABEL_THRESHOLD = 0.5  # ... below this
REASON_THRESHOLD = 0.25  # log-odds a reason group must add to be named
MAX_REASONS = 4

# Hand-set disengagement weights (module docstring): log-odds per unit of each signal.
DISENGAGEMENT = {
    "bias": -3.0,
    "negative_recent_share": 2.5,  # share of the last 5 turns in a negative state
    "trend_negative": 1.5,  # decayed share of negative states
    "pace_slowing": 1.5,  # log2 of the pace ratio, when above 1
    "idle_log_days": 0.8,  # log1p(days since the last turn)
}
NEGATIVE_TURNS_REASON = 3  # "frustrated in 3 of the last 5 turns" from 3 on
PACE_REASON = 1.5  # "pace slowing" from a 1.5x longer median pause
IDLE_REASON_DAYS = 7.0


@dataclass(frozen=True)
class Reason:
    code: str  # a REASONS group or a disengagement signal
    kind: str  # "risk" | "disengagement"
    text: str
    weight: float  # log-odds added (risk) or the signal's value (disengagement)


@dataclass(frozen=True)
class RiskAssessment:
    risk: float | None  # None without answers
    disengagement: float | None  # None without turns
    reasons: list[Reason]
    answers: int
    turns: int


class RiskModel:
    def __init__(
        self,
        coef: Sequence[float],
        intercept: float,
        mean: Sequence[float],
        scale: Sequence[float],
        *,
        features: Sequence[str] = FEATURES,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if tuple(features) != FEATURES:
            raise ValueError(f"model features {list(features)} differ from {list(FEATURES)}")
        self.coef = np.asarray(coef, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        assert self.coef.shape == self.mean.shape == self.scale.shape == (len(FEATURES),)
        self.intercept = float(intercept)
        self.info = dict(info or {})

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, c: float = 1.0, **info: Any) -> RiskModel:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        lr = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x), y)
        return cls(lr.coef_[0], lr.intercept_[0], scaler.mean_, scaler.scale_, info=info)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """[N, F] log-odds each feature adds to each row, relative to the training mean."""
        return self.coef * (np.atleast_2d(x) - self.mean) / self.scale

    def predict(self, x: np.ndarray) -> np.ndarray:
        logits = self.contributions(x).sum(axis=1) + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    # ---- artifact ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "label": f"accuracy of the next {LABEL_WINDOW} answers < {LABEL_THRESHOLD}",
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RiskModel:
        return cls(
            raw["coef"],
            raw["intercept"],
            raw["mean"],
            raw["scale"],
            features=raw["features"],
            info=raw.get("info"),
        )

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path | str) -> RiskModel:
        return cls.from_dict(json.loads((Path(directory) / MODEL_FILE).read_text()))


# ---- reasons ----------------------------------------------------------------------------------

Phrase = Callable[[AnswerFeatures, Callable[[str], str]], str]


def _count(state: AnswerFeatures, start: int, stop: int) -> str:
    correct, answered = state.window(start, stop)
    return f"{correct} of the last {answered}" if start == 1 else f"{correct} of {answered}"


def _recent_accuracy(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    return f"accuracy {_count(state, 1, BLOCK)} ({_count(state, 1, 5)})"


def _overall(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    return f"accuracy {state.total_correct / max(state.n, 1):.0%} over all {state.n} answers"


def _streak(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    return f"{state.wrong_streak} wrong answers in a row"


def _current(state: AnswerFeatures) -> str:
    return state.recent[-1][0]


def _skill_mastery(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    trend = state.trend(_current(state))
    text = f"mastery of {name(trend.skill_id)} at {trend.mastery:.2f}"
    text += f" after {trend.attempts} attempts"
    if not trend.falling_blocks:
        return text
    path = " -> ".join(f"{v:.2f}" for v in trend.history)
    blocks = "block" if trend.falling_blocks == 1 else "blocks"
    return f"{text}, falling for {trend.falling_blocks} {blocks} of {BLOCK} answers ({path})"


def _weak_recent(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    trends = [state.trend(s) for s in state.recent_skills()]
    weakest = min(trends, key=lambda t: t.mastery)
    text = f"weakest recent skill {name(weakest.skill_id)} at mastery {weakest.mastery:.2f}"
    falling = sum(t.falling_blocks >= 2 for t in trends)
    return text + (f"; {falling} recent skills falling" if falling > 1 else "")


def _fresh(state: AnswerFeatures) -> int:
    last = list(state.recent)[-BLOCK:]
    return sum(state.skills[s].first_seen >= state.n - len(last) for s, _ in last)


def _new_skills(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    answered = min(state.n, BLOCK)
    return f"{_fresh(state)} of the last {answered} answers on skills new to the learner"


def _short(state: AnswerFeatures, name: Callable[[str], str]) -> str:
    return f"only {state.n} answers so far"


# Group -> (its features, how to say it). Every feature is in exactly one group; a group's
# weight is the sum of its features' contributions. Features that only mean something together
# are one group: the fitted model weighs a skill's falling trend given its mastery (alone, its
# coefficient can come out either way), so the trend is said with the mastery it qualifies.
REASONS: dict[str, tuple[tuple[str, ...], Phrase]] = {
    "recent_accuracy": (("acc_last5", "acc_prev5", "acc_prev10"), _recent_accuracy),
    "overall_accuracy": (("acc_all",), _overall),
    "wrong_streak": (("wrong_streak",), _streak),
    "skill_mastery": (("skill_mastery", "skill_attempts_log", "skill_falling"), _skill_mastery),
    "weak_recent_skills": (("min_recent_mastery", "skills_falling"), _weak_recent),
    "new_skills": (("new_skill_share",), _new_skills),
    "short_history": (("answers_log",), _short),
}
# A group whose phrase would not be true of the learner is never named, whatever its weight
# (a streak of 1 is no streak; no new skill is no reason; a skill's mastery is a reason only when
# it is itself below the average or falling, not because of the attempts beside it).
Applies = Callable[[AnswerFeatures, Mapping[str, float]], bool]
APPLIES: dict[str, Applies] = {
    "wrong_streak": lambda state, _: state.wrong_streak >= 2,
    "new_skills": lambda state, _: _fresh(state) > 0,
    "skill_mastery": lambda state, contribution: (
        contribution["skill_mastery"] > 0 or state.trend(_current(state)).falling_blocks > 0
    ),
}
assert sorted(f for fs, _ in REASONS.values() for f in fs) == sorted(FEATURES)


def risk_reasons(
    model: RiskModel,
    state: AnswerFeatures,
    *,
    skill_name: Callable[[str], str] = lambda s: f"skill {s}",
    threshold: float = REASON_THRESHOLD,
) -> list[Reason]:
    """The groups adding at least ``threshold`` log-odds to the learner's risk, largest first."""
    if state.n == 0:
        return []
    contribution = dict(zip(FEATURES, model.contributions(state.features())[0], strict=True))
    weights = {
        code: float(sum(contribution[f] for f in features))
        for code, (features, _) in REASONS.items()
    }
    chosen = sorted(
        (w, code)
        for code, w in weights.items()
        if w >= threshold and (code not in APPLIES or APPLIES[code](state, contribution))
    )[::-1]
    return [
        Reason(code=code, kind="risk", text=REASONS[code][1](state, skill_name), weight=round(w, 3))
        for w, code in chosen
    ]


# ---- disengagement ----------------------------------------------------------------------------


def disengagement(signals: TurnSignals) -> tuple[float, list[Reason]]:
    """The hand-set disengagement score (module docstring) and the signals behind it."""
    pace_slowing = math.log2(signals.pace_ratio) if (signals.pace_ratio or 0) > 1 else 0.0
    idle = math.log1p(signals.idle_days or 0.0)
    share = signals.negative_recent / max(signals.recent_turns, 1)
    w = DISENGAGEMENT
    logit = (
        w["bias"]
        + w["negative_recent_share"] * share
        + w["trend_negative"] * signals.trend_negative
        + w["pace_slowing"] * pace_slowing
        + w["idle_log_days"] * idle
    )
    reasons = []
    if signals.negative_recent >= NEGATIVE_TURNS_REASON:
        if signals.top_negative_count == signals.negative_recent:
            what = signals.top_negative
        else:
            what = f"{signals.top_negative} or another negative state"
        reasons.append(
            Reason(
                "negative_emotion",
                "disengagement",
                f"{what} in {signals.negative_recent} of the last {signals.recent_turns} turns",
                round(share, 3),
            )
        )
    if signals.pace_ratio is not None and signals.pace_ratio >= PACE_REASON:
        reasons.append(
            Reason(
                "pace_slowing",
                "disengagement",
                f"pace slowing: median pause up {signals.pace_ratio:.1f}x",
                round(signals.pace_ratio, 3),
            )
        )
    if signals.idle_days is not None and signals.idle_days >= IDLE_REASON_DAYS:
        reasons.append(
            Reason(
                "inactive",
                "disengagement",
                f"no turn for {signals.idle_days:.0f} days",
                round(signals.idle_days, 3),
            )
        )
    return 1.0 / (1.0 + math.exp(-logit)), reasons


def assess(
    model: RiskModel,
    answers: Sequence[Answer],
    turns: Sequence[TurnObservation] = (),
    *,
    now: float,
    skill_name: Callable[[str], str] = lambda s: f"skill {s}",
) -> RiskAssessment:
    """Risk (from the answers, oldest first) and disengagement (from the turns) of one learner."""
    state = AnswerFeatures().extend(answers)
    risk = float(model.predict(state.features())[0]) if state.n else None
    reasons = risk_reasons(model, state, skill_name=skill_name)[:MAX_REASONS]
    signals = turn_signals(turns, now=now)
    engaged = None
    if signals is not None:
        engaged, more = disengagement(signals)
        reasons += more
    return RiskAssessment(
        risk=risk, disengagement=engaged, reasons=reasons, answers=state.n, turns=len(turns)
    )


def reasons_as_dicts(reasons: Sequence[Reason]) -> list[dict[str, Any]]:
    return [asdict(r) for r in reasons]
