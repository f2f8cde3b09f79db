"""Personalization deployment: picks the teaching strategy and learns from feedback.

The bandit's statistics live in the store, so every replica (and every restart) shares one
policy; a replica's cached copy is at most ``stats_max_age_s`` old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployments.config import PersonalizationUserConfig
from deployments.lifecycle.versions import Picked, VersionedModels
from deployments.replica_context import model_rollout
from deployments.schemas import FeedbackResponse, StrategyChoice, StrategyStats
from deployments.tutoring.exceptions import NotFoundError
from deployments.tutoring.rewards import PolicyStatistics, apply_feedback
from models.common.registry import ModelRegistry
from models.common.vocab import STRATEGIES
from models.personalization.bandit import ArmStatistics, LinearThompsonSampling
from models.personalization.context import CONTEXT_DIM
from models.personalization.policy_version import MODEL_NAME, PolicyVersion
from store import FeedbackRecord, StoreError, TutorStore, open_store

logger = logging.getLogger("ray.serve")
STATS_READ_TIMEOUT_S = 0.5


@dataclass
class ServedPolicy:
    """One registered policy version with its copy of the statistics it reads."""

    policy: PolicyVersion
    bandit: LinearThompsonSampling
    loaded_at: float = field(default=float("-inf"))


class PersonalizationDeployment:
    def __init__(
        self, *, registry_dir: str | Path, store_uri: str, store: TutorStore | None = None
    ) -> None:
        self._store = store or open_store(store_uri)
        # Statistics are read on a connection of their own that waits little: a write stuck on
        # a locked store (a feedback, the lifecycle's flush) never holds up a choice, which then
        # uses the statistics it already has.
        self._stats_store = store or open_store(store_uri, timeout_s=STATS_READ_TIMEOUT_S)
        registry = ModelRegistry(registry_dir)
        self._config = PersonalizationUserConfig()
        self._statistics = PolicyStatistics(registry)

        def load(version: str) -> ServedPolicy:
            policy = PolicyVersion.from_artifact(registry.load(MODEL_NAME, version).path)
            config = policy.thompson_config(propensity_samples=self._config.propensity_samples)
            return ServedPolicy(policy, LinearThompsonSampling(STRATEGIES, CONTEXT_DIM, config))

        self._versions: VersionedModels[ServedPolicy] = VersionedModels(
            MODEL_NAME,
            load=load,
            resolve=lambda v: registry.resolve_version(MODEL_NAME, v),
            reload_key=lambda: self._config.propensity_samples,
        )
        # The lifecycle's writes on a connection of their own too (a store passed in: shared).
        self._rollout = model_rollout(self._versions, store_uri=store_uri, store=store)
        self._rng = np.random.default_rng()

    def reconfigure(self, user_config: dict) -> None:
        self._config = PersonalizationUserConfig.model_validate(user_config)
        self._rollout.apply(self._config)

    def _stale(self, served: ServedPolicy) -> bool:
        return time.monotonic() - served.loaded_at >= self._config.stats_max_age_s

    def _refresh(self, served: ServedPolicy) -> None:
        if not self._stale(served):
            return
        try:
            stored = self._stats_store.bandit_stats(served.policy.statistics)
        except StoreError:
            # Slightly stale statistics beat a stalled or failed choice; tried again after
            # stats_max_age_s.
            logger.warning("personalization: statistics not refreshed (store unavailable)")
            served.loaded_at = time.monotonic()
            return
        served.bandit.update_statistics(
            {
                arm: ArmStatistics.from_flat(s.a, s.b, s.n, s.reward_sum)
                for arm, s in stored.items()
                if s.b
            }
        )
        served.loaded_at = time.monotonic()

    def _choose(self, served: ServedPolicy, x: np.ndarray) -> StrategyChoice:
        self._refresh(served)
        choice = served.bandit.choose(x, self._rng)
        return StrategyChoice(name=choice.arm, propensity=choice.propensity)

    async def choose(
        self,
        context: list[float],
        *,
        learner_id: str | None = None,
        turn_id: str | None = None,
    ) -> tuple[StrategyChoice, str]:
        """The strategy for a turn's context (``models.personalization.context.build_context``)
        and the policy version that chose it; a shadow version also chooses, after the answer
        is sent, and its choice is stored, never used."""
        if len(context) != CONTEXT_DIM:
            raise ValueError(f"context has {len(context)} features, the policy {CONTEXT_DIM}")
        x = np.asarray(context, dtype=np.float64)
        picked = self._versions.pick(learner_id)
        with self._rollout.serving(picked):
            if self._stale(picked.model):  # the statistics come from the store: in a thread
                choice = await asyncio.to_thread(self._choose, picked.model, x)
            else:  # ~0.1 ms of numpy: less than a thread's hand-off
                choice = self._choose(picked.model, x)
        shadow = self._versions.shadow()
        if shadow is not None and turn_id is not None:
            self._rollout.spawn(self._shadow(shadow, picked, x, turn_id, learner_id or ""))
        return choice, picked.version

    async def _shadow(
        self,
        shadow: Picked[ServedPolicy],
        served: Picked[ServedPolicy],
        x: np.ndarray,
        turn_id: str,
        learner_id: str,
    ) -> None:
        choice = await self._rollout.run_shadow(self._choose, shadow.model, x)
        await self._rollout.save_shadow(
            shadow=shadow,
            served=served,
            turn_id=turn_id,
            learner_id=learner_id,
            output={"strategy": choice.name, "propensity": choice.propensity},
        )

    def preferred(self, context: list[float], *, learner_id: str | None = None) -> str:
        served = self._versions.pick(learner_id).model
        self._refresh(served)
        return served.bandit.preferred_arm(np.asarray(context))

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
        accepted, stored = apply_feedback(
            self._store,
            turn,
            FeedbackRecord(
                turn_id=turn_id, learner_id=turn.learner_id, reward=reward, ts=now, **(answer or {})
            ),
            statistics=self._statistics,
        )
        if accepted:  # this replica sees its own update at once
            for version in self._versions.plan.loaded:
                self._versions.get(version).loaded_at = float("-inf")
        return FeedbackResponse(
            turn_id=turn_id,
            accepted=accepted,
            reward=stored.reward,
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
        return self._versions.plan.champion

    def rollout(self) -> dict:
        return self._versions.plan.describe()
