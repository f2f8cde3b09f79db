"""Difficulty deployment: knowledge tracing over the learner's answer history."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import torch
from ray.serve import metrics

from deployments.config import DifficultyUserConfig
from deployments.lifecycle.versions import Picked, VersionedModels
from deployments.replica_context import model_rollout
from deployments.schemas import (
    DifficultyResponse,
    Exercise,
    Prediction,
    SkillMastery,
)
from models.common.registry import ModelRegistry
from models.difficulty.encoding_cache import EncodingCache
from models.difficulty.loader import load_tracer
from models.difficulty.lr_tracer import LRTracer
from models.difficulty.tracer import KnowledgeTracer
from models.difficulty.tracer_api import (
    CandidatePrediction,
    Interaction,
    as_interactions,
    recommend,
)
from store import TutorStore

logger = logging.getLogger("ray.serve")
MODEL_NAME = "difficulty"
# Any registered version: the networks (DKT, the attentive tracer) or the feature model (v3).
Tracer = KnowledgeTracer | LRTracer


def learner_cache(tracer: Tracer) -> EncodingCache | None:
    """The tracer's per-learner cache: encoded windows (networks) or feature states (LR)."""
    return tracer.state_cache if isinstance(tracer, LRTracer) else tracer.encoding_cache


def _prediction(p: CandidatePrediction) -> Prediction:
    return Prediction(
        item_id=p.item_id,
        skill_id=p.skill_id,
        p_correct=p.p_correct,
        flags=list(p.flags),
        basis=p.basis,
    )


class DifficultyDeployment:
    def __init__(
        self,
        *,
        registry_dir: str | Path,
        store_uri: str,
        torch_threads: int = 1,
        store: TutorStore | None = None,
    ) -> None:
        torch.set_num_threads(torch_threads)
        registry = ModelRegistry(registry_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._config = DifficultyUserConfig()

        def load(version: str) -> Tracer:
            # Whichever tracer the version holds (the attentive tracer, DKT or the feature
            # model), on the artifact's own window: the rows the model was trained to read.
            tracer = load_tracer(
                registry.load(MODEL_NAME, version).path,
                device=device,
                encoding_cache_size=self._config.encoding_cache_size,
            )
            logger.info(
                "difficulty %s (%s) on %s: window %d rows, cache %d learners",
                version,
                tracer.architecture,
                device,
                tracer.max_history,
                self._config.encoding_cache_size,
            )
            return tracer

        self._versions: VersionedModels[Tracer] = VersionedModels(
            MODEL_NAME,
            load=load,
            resolve=lambda v: registry.resolve_version(MODEL_NAME, v),
            reload_key=lambda: self._config.encoding_cache_size,
        )
        self._rollout = model_rollout(self._versions, store_uri=store_uri, store=store)
        self._cache_reuse = metrics.Gauge(
            "tutor_difficulty_encoding_reuse_ratio",
            description="Share of history rows whose encoding came from the encoding cache.",
        )
        self._cache_entries = metrics.Gauge(
            "tutor_difficulty_encoding_cache_entries",
            description="Learners' encoded histories held by this replica.",
        )

    def reconfigure(self, user_config: dict) -> None:
        self._config = DifficultyUserConfig.model_validate(user_config)
        self._rollout.apply(self._config)

    async def predict(
        self,
        history: list[Interaction],
        candidates: list[Exercise],
        trace: bool = False,
        *,
        learner_id: str | None = None,
        version: str | None = None,
        turn_id: str | None = None,
    ) -> DifficultyResponse:
        """P(correct) per candidate from the version this learner gets (or the one named); with
        a ``turn_id``, a shadow version also predicts them, after the answer is sent.
        ``history``: Interactions or their ``(item_id, skill_id, correct)`` rows."""
        history = as_interactions(history)
        picked = self._versions.pick(learner_id, version)
        with self._rollout.serving(picked):
            # In a thread, as Serve runs a sync method: requests overlap while torch computes.
            response = await asyncio.to_thread(self._predict, picked, history, candidates, trace)
        shadow = self._versions.shadow()
        if shadow is not None and turn_id is not None:
            self._rollout.spawn(
                self._shadow(shadow, picked, history, candidates, turn_id, learner_id or "")
            )
        return response

    def _predict(
        self,
        picked: Picked[Tracer],
        history: list[Interaction],
        candidates: list[Exercise],
        trace: bool,
    ) -> DifficultyResponse:
        tracer = picked.model
        raw = tracer.predict(history, [(c.item_id, c.skill_id) for c in candidates])
        self._record_cache(tracer)
        predictions = [_prediction(p) for p in raw]
        band = self._config.target_band
        return DifficultyResponse(
            predictions=predictions,
            recommended=predictions[recommend(raw, band=band)],
            target_band=band,
            history_length=len(history),
            trace=[_prediction(p) for p in tracer.trace(history)] if trace else None,
            model_version=picked.version,
        )

    async def _shadow(
        self,
        shadow: Picked[Tracer],
        served: Picked[Tracer],
        history: list[Interaction],
        candidates: list[Exercise],
        turn_id: str,
        learner_id: str,
    ) -> None:
        response = await self._rollout.run_shadow(self._predict, shadow, history, candidates, False)
        await self._rollout.save_shadow(
            shadow=shadow,
            served=served,
            turn_id=turn_id,
            learner_id=learner_id,
            output={
                "predictions": [p.model_dump() for p in response.predictions],
                "recommended_item_id": response.recommended.item_id,
            },
        )

    def mastery(
        self, history: list[Interaction], *, learner_id: str | None = None
    ) -> list[SkillMastery]:
        history = as_interactions(history)
        tracer = self._versions.pick(learner_id).model
        attempts: dict[str, int] = {}
        for step in history:
            attempts[step.skill_id] = attempts.get(step.skill_id, 0) + 1
        return [
            SkillMastery(
                skill_id=skill,
                name=tracer.skill_name(skill),
                mastery=p,
                attempts=attempts.get(skill, 0),
            )
            for skill, p in tracer.mastery(history).items()
        ]

    def _record_cache(self, tracer: Tracer) -> None:
        cache = learner_cache(tracer)
        if cache is not None:
            stats = cache.stats()
            self._cache_reuse.set(stats["reuse_ratio"])
            self._cache_entries.set(stats["entries"])

    def model_version(self, learner_id: str | None = None) -> str:
        return self._versions.pick(learner_id).version

    def rollout(self) -> dict:
        return self._versions.plan.describe()
