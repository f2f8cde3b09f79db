"""Simulated learners for judging teaching-strategy policies offline.

Each simulated learner works through a real learner's exercises (assist2009_pid test split, never
seen in the difficulty model's training). Three things drive a response:

- Knowledge: the trained difficulty model's P(correct) for the exercise, given the simulated
  history so far (so mastery moves with the learner's own successes and failures).
- Emotion: a hidden state among the eight learning states that moves after each answer (right
  answers lift, wrong ones frustrate). Policies see it only through a noisy distribution, as
  they see the emotion model's output in serving.
- The strategy: a hidden shift of the answer's log-odds that depends on the emotion and the
  mastery (``strategy_effect``). No strategy is best everywhere, which is what a contextual
  policy can exploit and a fixed one cannot.

Every policy meets the same stream: the learners, their order, their gaps between turns and the
uniform draw behind each answer come from seeded generators that no policy touches (common
random numbers), so differences between policies are not luck of the draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.common.vocab import LEARNING_STATES, STRATEGIES
from models.difficulty.data import StudentSequence
from models.difficulty.tracer import Interaction, KnowledgeTracer, recommend
from models.personalization.context import build_context

STATE_INDEX = {s: i for i, s in enumerate(LEARNING_STATES)}
POSITIVE_STATES = ("curious", "engaged", "breakthrough", "neutral")
NEGATIVE_STATES = ("confused", "frustrated", "discouraged", "anxious")


def strategy_effect(strategy: str, emotion: str, mastery: float, long_gap: bool) -> float:
    """The hidden shift of a correct answer's log-odds (what a policy has to discover).

    Shaped after well-known findings, not fitted to data: worked examples help novices and bore
    experts (expertise reversal); hints calm frustration; Socratic questioning needs a learner
    who is curious and knows enough; quizzes pay off with mastery (retrieval practice); review
    helps after a long break or when discouraged.
    """
    if strategy == "worked_example":
        return 1.6 * (0.55 - mastery) + (0.5 if emotion in ("confused", "discouraged") else 0.0)
    if strategy == "hint":
        return 0.9 if emotion in ("frustrated", "anxious") else -0.3
    if strategy == "socratic":
        engaged = emotion in ("curious", "engaged", "breakthrough")
        return (0.6 if engaged else -0.6) + 1.0 * (mastery - 0.5)
    if strategy == "analogy":
        return {"confused": 0.8, "curious": 0.3}.get(emotion, -0.2)
    if strategy == "quiz":
        return 1.4 * (mastery - 0.6) + (-0.5 if emotion == "anxious" else 0.0)
    if strategy == "review":
        return 0.7 * (0.5 - mastery) + 0.5 * (emotion == "discouraged") + 0.6 * long_gap - 0.2
    raise ValueError(f"unknown strategy {strategy!r}")


@dataclass(frozen=True)
class SimulatorConfig:
    turns: int = 20_000
    active_learners: int = 64  # learners interleaved at once, as on a live service
    max_turns_per_learner: int = 120
    candidates: int = 3  # next exercises the difficulty model chooses among
    emotion_noise: float = 0.6  # weight of Dirichlet noise in the observed emotion distribution
    session_turns: tuple[int, int] = (4, 16)
    long_gap_s: float = 6 * 3600.0
    seed: int = 0


@dataclass
class Observation:
    """What a policy may see (``context``) and what only the oracle may see (``true_rewards``)."""

    context: np.ndarray
    true_rewards: np.ndarray  # [arms] P(correct) under each strategy


@dataclass
class SimulatedLearner:
    exercises: list[tuple[str, str, float]]  # (item, skill, reserved draw) the learner works on
    emotion: str
    rng: np.random.Generator  # the learner's own stream: gaps, emotion moves, noise
    history: list[Interaction] = field(default_factory=list)
    session_left: int = 0
    session_turns: int = 0
    seconds_since_last: float | None = None
    turns_done: int = 0


def first_rows_of_attempts(sequence: StudentSequence) -> list[tuple[str, str]]:
    """One exercise per attempt: a problem tagged with several skills is several rows in the
    data, and the simulator gives it to the learner once, under its first skill."""
    exercises: list[tuple[str, str]] = []
    previous = None
    for item, skill in zip(sequence.item_ids, sequence.skill_ids, strict=True):
        if item != previous:
            exercises.append((item, skill))
        previous = item
    return exercises


class LearnerSimulator:
    def __init__(
        self,
        tracer: KnowledgeTracer,
        sequences: Sequence[StudentSequence],
        config: SimulatorConfig | None = None,
    ) -> None:
        self.tracer = tracer
        self.config = config or SimulatorConfig()
        self.population = [
            ex for ex in (first_rows_of_attempts(s) for s in sequences) if len(ex) >= 10
        ]
        assert self.population, "no learner has 10 or more attempts"
        self._stream = np.random.default_rng(self.config.seed)
        self._next_learner = 0
        self._active = [self._new_learner() for _ in range(self.config.active_learners)]
        self._current: SimulatedLearner | None = None
        self._current_exercise: tuple[str, str, float] | None = None
        self._current_p: float = 0.5

    def _new_learner(self) -> SimulatedLearner:
        # Cycles through the population; each pass gives its learners fresh emotions and draws.
        index = self._next_learner
        self._next_learner += 1
        rng = np.random.default_rng([self.config.seed, index])
        rows = self.population[index % len(self.population)][: self.config.max_turns_per_learner]
        prior = np.array([0.05, 0.15, 0.15, 0.15, 0.1, 0.02, 0.08, 0.3])
        return SimulatedLearner(
            exercises=[(item, skill, float(rng.random())) for item, skill in rows],
            emotion=LEARNING_STATES[int(rng.choice(len(LEARNING_STATES), p=prior))],
            rng=rng,
        )

    def _start_turn(self, learner: SimulatedLearner) -> None:
        low, high = self.config.session_turns
        if learner.session_left == 0:
            learner.session_left = int(learner.rng.integers(low, high + 1))
            learner.session_turns = 0
            if learner.turns_done:
                learner.seconds_since_last = float(learner.rng.exponential(86_400.0))
        else:
            learner.seconds_since_last = float(learner.rng.uniform(30.0, 240.0))

    def observe(self) -> Observation:
        """The next turn of a randomly chosen active learner."""
        slot = int(self._stream.integers(len(self._active)))
        learner = self._active[slot]
        self._start_turn(learner)
        candidates = learner.exercises[: self.config.candidates]
        predictions = self.tracer.predict(learner.history, [(i, s) for i, s, _ in candidates])
        chosen = recommend(predictions)
        mastery = predictions[chosen].p_correct
        self._current, self._current_exercise = learner, candidates[chosen]
        self._current_p = mastery
        learner.exercises.pop(chosen)
        observed = self._observed_emotion(learner)
        context = build_context(
            states=dict(zip(LEARNING_STATES, observed, strict=True)),
            recommended_p_correct=mastery,
            candidate_p_correct=[p.p_correct for p in predictions],
            answers=[h.correct for h in learner.history],
            session_turns=learner.session_turns,
            seconds_since_last_turn=learner.seconds_since_last,
        )
        long_gap = (learner.seconds_since_last or 0.0) >= self.config.long_gap_s
        logit = math.log(mastery / (1.0 - mastery))
        shifts = [strategy_effect(s, learner.emotion, mastery, long_gap) for s in STRATEGIES]
        true_rewards = 1.0 / (1.0 + np.exp(-(logit + np.array(shifts))))
        return Observation(context=context, true_rewards=true_rewards)

    def _observed_emotion(self, learner: SimulatedLearner) -> np.ndarray:
        noise = learner.rng.dirichlet(np.full(len(LEARNING_STATES), 0.5))
        truth = np.zeros(len(LEARNING_STATES))
        truth[STATE_INDEX[learner.emotion]] = 1.0
        return (1.0 - self.config.emotion_noise) * truth + self.config.emotion_noise * noise

    def respond(self, observation: Observation, arm: int) -> float:
        """The learner answers after strategy ``arm``; the reward is 1.0 for a right answer."""
        learner, exercise = self._current, self._current_exercise
        assert learner is not None and exercise is not None, "respond() needs an observe() first"
        item, skill, draw = exercise
        correct = draw < observation.true_rewards[arm]
        learner.history.append(Interaction(item, skill, bool(correct)))
        learner.emotion = self._next_emotion(learner, correct)
        learner.session_left -= 1
        learner.session_turns += 1
        learner.turns_done += 1
        if not learner.exercises:
            self._active[self._active.index(learner)] = self._new_learner()
        self._current = self._current_exercise = None
        return float(correct)

    def _next_emotion(self, learner: SimulatedLearner, correct: bool) -> str:
        if learner.rng.random() < 0.5:
            return learner.emotion  # emotions persist over a few turns
        if correct and learner.emotion in NEGATIVE_STATES and learner.rng.random() < 0.4:
            return "breakthrough"
        pool = POSITIVE_STATES if correct else NEGATIVE_STATES
        return pool[int(learner.rng.integers(len(pool)))]
