"""Personalization deployment: picks the teaching strategy and learns from feedback.

The bandit's statistics live in the store, so every replica (and every restart) shares one
policy; a replica's cached copy is at most ``stats_max_age_s`` old.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np

from deployments.config import PersonalizationUserConfig
from deployments.schemas import FeedbackResponse, StrategyChoice, StrategyStats
from deployments.tutoring.exceptions import NotFoundError
from deployments.tutoring.rewards import reward_turn
from models.common.vocab import STRATEGIES
from models.personalization.bandit import ArmStatistics, LinearThompsonSampling, ThompsonConfig
from models.personalization.context import CONTEXT_DIM
from store import FeedbackRecord, TutorStore, open_store
from store.records import AnswerRecord

logger = logging.getLogger("ray.serve")


class PersonalizationDeployment:
    def __init__(self, *, store_uri: str, store: TutorStore | None = None) -> None:
        self._store = store or open_store(store_uri)
        self._config = PersonalizationUserConfig()
        self._policy = LinearThompsonSampling(STRATEGIES, CONTEXT_DIM)
        self._rng = np.random.default_rng()
        self._stats_loaded_at = float("-inf")

    def reconfigure(self, user_config: dict) -> None:
        self._config = PersonalizationUserConfig.model_validate(user_config)
        self._policy = LinearThompsonSampling(
            STRATEGIES,
            CONTEXT_DIM,
            ThompsonConfig(
                exploration=self._config.exploration,
                prior_precision=self._config.prior_precision,
                propensity_samples=self._config.propensity_samples,
            ),
        )
        self._stats_loaded_at = float("-inf")

    def _refresh(self) -> None:
        if time.monotonic() - self._stats_loaded_at < self._config.stats_max_age_s:
            return
        stored = self._store.bandit_stats(self._config.policy)
        self._policy.update_statistics(
            {
                arm: ArmStatistics.from_flat(s.a, s.b, s.n, s.reward_sum)
                for arm, s in stored.items()
                if s.b
            }
        )
        self._stats_loaded_at = time.monotonic()

    def choose(self, context: list[float]) -> tuple[StrategyChoice, str]:
        """The strategy for a turn's context (``models.personalization.context.build_context``)
        and the policy that chose it."""
        if len(context) != CONTEXT_DIM:
            raise ValueError(f"context has {len(context)} features, the policy {CONTEXT_DIM}")
        self._refresh()
        choice = self._policy.choose(np.asarray(context, dtype=np.float64), self._rng)
        return StrategyChoice(name=choice.arm, propensity=choice.propensity), self._config.policy

    def preferred(self, context: list[float]) -> str:
        self._refresh()
        return self._policy.preferred_arm(np.asarray(context))

    def feedback(
        self,
        *,
        turn_id: str,
        reward: float | None,
        answer: dict | None,
        now: float,
    ) -> FeedbackResponse:
        turn = self._store.get_turn(turn_id)
        if turn is None:
            raise NotFoundError(f"unknown turn_id {turn_id!r}")
        accepted = self._store.add_feedback(
            FeedbackRecord(
                turn_id=turn_id, learner_id=turn.learner_id, reward=reward, ts=now, **(answer or {})
            )
        )
        if accepted and reward is not None:
            reward_turn(self._store, turn, source="explicit", reward=reward, now=now)
        if accepted and answer is not None:
            self._store.add_answer(
                AnswerRecord(
                    learner_id=turn.learner_id, source_id=f"{turn_id}:feedback", ts=now, **answer
                )
            )
            correct = float(answer["correct"])
            reward_turn(self._store, turn, source="answer", reward=correct, now=now)
        if accepted:
            self._stats_loaded_at = float("-inf")  # this replica sees its own update at once
        stored = self._store.get_feedback(turn_id)
        return FeedbackResponse(
            turn_id=turn_id,
            accepted=accepted,
            reward=stored.reward if stored else reward,
            strategy=turn.strategy,
        )

    def strategy_stats(self, learner_id: str, *, limit: int = 500) -> dict[str, StrategyStats]:
        """Per strategy: turns that used it, rewards received, their mean (both sources)."""
        turns = Counter(t.strategy for t in self._store.recent_turns(learner_id, limit=limit))
        rewards: dict[str, list[float]] = {}
        for reward in self._store.learner_rewards(learner_id, limit=limit):
            rewards.setdefault(reward.strategy, []).append(reward.reward)
        return {
            arm: StrategyStats(
                count=turns.get(arm, 0),
                rewarded=len(rewards.get(arm, [])),
                mean_reward=float(np.mean(rewards[arm])) if rewards.get(arm) else None,
            )
            for arm in dict.fromkeys([*STRATEGIES, *turns, *rewards])
        }

    def model_version(self) -> str:
        return self._config.policy
