"""Features of a learner's risk of failing the next exercises, from the answers and turns so far.

One code path for evaluation (cut points in the KT datasets' sequences), the scoring job (each
learner of an export) and so for what ``GET /v1/learners/{id}`` serves: ``AnswerFeatures`` takes
the answers oldest first, one at a time, and ``features()`` reads only what it has been given,
so features at a cut never see an answer after it (tests/unit/difficulty/test_risk_features.py).

Mastery here is model-free: per skill, an exponentially decayed share of correct answers with a
Beta(1, 1) prior, ``(sum decay^age * correct + 1) / (sum decay^age + 2)``, decayed per attempt at
that skill. It needs no network and so works on any dataset's skills; the served tracer's
P(correct) would leak on 4 of the 5 folds (it was trained on assist2009_pid fold 1, whose
training students are the other folds' test students).

A "block" is 10 consecutive answers counted back from the latest one: "mastery falling for 3
blocks" compares the skill's mastery now with its mastery 10, 20 and 30 answers ago. The KT data
has no timestamps, so blocks stand in for sessions, the same way in training and in service.

Turns (served data only: emotion states and times) feed the disengagement signals of
``turn_signals``; the KT data has no turns, so they never enter the fitted risk model.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.common.vocab import LEARNING_STATES
from models.personalization.context import SESSION_BREAK_S

BLOCK = 10  # answers per block (module docstring)
TREND_BLOCKS = 3  # how many blocks back a mastery trend looks
MASTERY_DECAY = 0.7  # weight of an attempt at a skill per later attempt at the same skill
RECENT = 20  # answers whose skills count as "recently practised"
MAX_STREAK = 10
FALLING_EPS = 1e-9  # a block counts as falling when mastery dropped by more than this

# Order of the fitted model's inputs; changing it is a new model version.
FEATURES: tuple[str, ...] = (
    "answers_log",  # log1p(answers so far)
    "acc_last5",  # smoothed accuracy of the last 5 answers
    "acc_prev5",  # of the 5 before them (answers 6-10 back)
    "acc_prev10",  # of answers 11-20 back
    "acc_all",  # of every answer so far
    "wrong_streak",  # current run of wrong answers (capped)
    "skill_mastery",  # mastery of the skill of the latest answer
    "skill_attempts_log",  # log1p(attempts at that skill)
    "skill_falling",  # blocks (0..3) in a row over which that skill's mastery fell
    "min_recent_mastery",  # lowest mastery among the skills of the last 20 answers
    "skills_falling",  # skills of the last 20 answers falling for >= 2 blocks
    "new_skill_share",  # share of the last 10 answers on skills first met within them
)
NEGATIVE_STATES = ("frustrated", "confused", "anxious", "discouraged")
assert set(NEGATIVE_STATES) <= set(LEARNING_STATES)


@dataclass(frozen=True)
class Answer:
    skill_id: str
    correct: bool
    item_id: str = ""
    ts: float | None = None


@dataclass(frozen=True)
class TurnObservation:
    """What disengagement reads of a turn: when, and the served emotion."""

    ts: float
    emotion_state: str | None = None
    states: Mapping[str, float] | None = None  # the served distribution over learning states


@dataclass
class _Skill:
    correct: float = 0.0  # decayed sums
    count: float = 0.0
    attempts: int = 0
    first_seen: int = 0  # answer index (0-based) of the first attempt
    # (answers so far after this attempt, mastery after it), newest last: enough for the trend
    marks: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=BLOCK * 4))

    @property
    def mastery(self) -> float:
        return (self.correct + 1.0) / (self.count + 2.0)

    def mastery_at(self, n: int) -> float | None:
        """Mastery once the learner had given ``n`` answers (None: not yet attempted then)."""
        for seen, value in reversed(self.marks):
            if seen <= n:
                return value
        return None


@dataclass(frozen=True)
class SkillTrend:
    skill_id: str
    mastery: float
    attempts: int
    falling_blocks: int
    history: tuple[float, ...]  # mastery at the end of each block, oldest first, ending now


class AnswerFeatures:
    """A learner's answer features, updated one answer at a time (oldest first)."""

    def __init__(self) -> None:
        self.n = 0
        self.total_correct = 0
        self.recent: deque[tuple[str, bool]] = deque(maxlen=RECENT)
        self.wrong_streak = 0
        self.skills: dict[str, _Skill] = {}

    def add(self, answer: Answer) -> None:
        skill = self.skills.get(answer.skill_id)
        if skill is None:
            skill = self.skills[answer.skill_id] = _Skill(first_seen=self.n)
        skill.correct = MASTERY_DECAY * skill.correct + float(answer.correct)
        skill.count = MASTERY_DECAY * skill.count + 1.0
        skill.attempts += 1
        self.n += 1
        skill.marks.append((self.n, skill.mastery))
        self.total_correct += int(answer.correct)
        self.recent.append((answer.skill_id, bool(answer.correct)))
        self.wrong_streak = 0 if answer.correct else self.wrong_streak + 1

    def extend(self, answers: Iterable[Answer]) -> AnswerFeatures:
        for answer in answers:
            self.add(answer)
        return self

    # ---- reading ------------------------------------------------------------------------------

    def window(self, start: int, stop: int) -> tuple[int, int]:
        """(correct, answered) among answers ``start`` to ``stop`` back (1 = the latest)."""
        recent = list(self.recent)
        chosen = recent[max(0, len(recent) - stop) : max(0, len(recent) - start + 1)]
        return sum(c for _, c in chosen), len(chosen)

    def trend(self, skill_id: str) -> SkillTrend:
        skill = self.skills[skill_id]
        values = [skill.mastery]
        for back in range(1, TREND_BLOCKS + 1):
            earlier = skill.mastery_at(self.n - back * BLOCK)
            if earlier is None:
                break
            values.append(earlier)
        falling = 0
        for newer, older in zip(values, values[1:], strict=False):
            if newer < older - FALLING_EPS:
                falling += 1
            else:
                break
        return SkillTrend(
            skill_id=skill_id,
            mastery=skill.mastery,
            attempts=skill.attempts,
            falling_blocks=falling,
            history=tuple(reversed(values[: falling + 1])),
        )

    def recent_skills(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in reversed(self.recent)))  # newest first

    def features(self) -> np.ndarray:
        """The model's inputs, in ``FEATURES`` order (float64)."""
        values = dict.fromkeys(FEATURES, 0.0)
        values["answers_log"] = math.log1p(self.n)
        for name, (start, stop) in {
            "acc_last5": (1, 5),
            "acc_prev5": (6, 10),
            "acc_prev10": (11, 20),
        }.items():
            correct, answered = self.window(start, stop)
            values[name] = (correct + 1.0) / (answered + 2.0)
        values["acc_all"] = (self.total_correct + 1.0) / (self.n + 2.0)
        values["wrong_streak"] = float(min(self.wrong_streak, MAX_STREAK))
        if self.n:
            current = self.trend(self.recent[-1][0])
            values["skill_mastery"] = current.mastery
            values["skill_attempts_log"] = math.log1p(current.attempts)
            values["skill_falling"] = float(current.falling_blocks)
            trends = [self.trend(s) for s in self.recent_skills()]
            values["min_recent_mastery"] = min(t.mastery for t in trends)
            values["skills_falling"] = float(sum(t.falling_blocks >= 2 for t in trends))
            last = list(self.recent)[-BLOCK:]
            fresh = self.n - len(last)  # answers before the last block
            values["new_skill_share"] = sum(
                self.skills[s].first_seen >= fresh for s, _ in last
            ) / len(last)
        else:
            values["skill_mastery"] = values["min_recent_mastery"] = 0.5
        return np.array([values[name] for name in FEATURES], dtype=np.float64)


def answer_features(answers: Iterable[Answer]) -> AnswerFeatures:
    return AnswerFeatures().extend(answers)


# ---- turns: disengagement signals ---------------------------------------------------------------


@dataclass(frozen=True)
class TurnSignals:
    turns: int
    negative_recent: int  # of the last RECENT_TURNS turns, how many in a negative state
    recent_turns: int
    top_negative: str | None  # the most frequent negative state among them
    top_negative_count: int
    trend_negative: float  # decayed share of negative states over all turns read
    pace_ratio: float | None  # median in-session pause, last turns over earlier ones
    idle_days: float | None  # days from the latest turn to ``now``


RECENT_TURNS = 5
PACE_TURNS = 10  # the pace of the last 10 turns, compared with the turns before them
MIN_PAUSES = 3  # pauses needed on each side for a pace ratio
TREND_DECAY = 0.8


def _pauses(times: Sequence[float]) -> list[float]:
    gaps = np.diff(sorted(times))
    return [float(g) for g in gaps if 0 < g <= SESSION_BREAK_S]


def turn_signals(turns: Sequence[TurnObservation], *, now: float) -> TurnSignals | None:
    """Pace and emotion signals of a learner's turns (oldest first); None without turns."""
    if not turns:
        return None
    turns = sorted(turns, key=lambda t: t.ts)
    last = turns[-RECENT_TURNS:]
    negatives = [t.emotion_state for t in last if t.emotion_state in NEGATIVE_STATES]
    top = max(set(negatives), key=negatives.count) if negatives else None
    weight_sum = trend = 0.0
    for age, turn in enumerate(reversed(turns)):
        weight = TREND_DECAY**age
        weight_sum += weight
        if turn.states:
            trend += weight * sum(float(turn.states.get(s, 0.0)) for s in NEGATIVE_STATES)
        else:
            trend += weight * float(turn.emotion_state in NEGATIVE_STATES)
    times = [t.ts for t in turns]
    recent_pauses = _pauses(times[-PACE_TURNS:])
    earlier_pauses = _pauses(times[: -PACE_TURNS + 1])  # shares one turn with the recent ones
    pace = None
    if len(recent_pauses) >= MIN_PAUSES and len(earlier_pauses) >= MIN_PAUSES:
        pace = float(np.median(recent_pauses) / max(np.median(earlier_pauses), 1e-3))
    return TurnSignals(
        turns=len(turns),
        negative_recent=len(negatives),
        recent_turns=len(last),
        top_negative=top,
        top_negative_count=negatives.count(top) if top else 0,
        trend_negative=trend / weight_sum,
        pace_ratio=pace,
        idle_days=max(0.0, (now - times[-1]) / 86400.0),
    )
