"""Difficulty deployment: knowledge tracing over the learner's answer history."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from ray.serve import metrics

from deployments.config import DifficultyUserConfig
from deployments.schemas import (
    DifficultyResponse,
    Exercise,
    Prediction,
    SkillMastery,
)
from models.common.registry import ModelRegistry
from models.difficulty.tracer import CandidatePrediction, Interaction, KnowledgeTracer, recommend

logger = logging.getLogger("ray.serve")
MODEL_NAME = "difficulty"


def _prediction(p: CandidatePrediction) -> Prediction:
    return Prediction(
        item_id=p.item_id,
        skill_id=p.skill_id,
        p_correct=p.p_correct,
        flags=list(p.flags),
        basis=p.basis,
    )


class DifficultyDeployment:
    def __init__(self, *, registry_dir: str | Path, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self._registry = ModelRegistry(registry_dir)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._tracer: KnowledgeTracer | None = None
        self._version = ""
        self._cache_size = -1
        self._band = (0.70, 0.85)
        self._cache_reuse = metrics.Gauge(
            "tutor_difficulty_encoding_reuse_ratio",
            description="Share of history rows whose encoding came from the encoding cache.",
        )
        self._cache_entries = metrics.Gauge(
            "tutor_difficulty_encoding_cache_entries",
            description="Learners' encoded histories held by this replica.",
        )

    def reconfigure(self, user_config: dict) -> None:
        config = DifficultyUserConfig.model_validate(user_config)
        version = self._registry.resolve_version(MODEL_NAME, config.model_version)
        if version != self._version or config.encoding_cache_size != self._cache_size:
            artifact = self._registry.load(MODEL_NAME, version)
            # The artifact's own window: the rows the model was trained to read.
            self._tracer = KnowledgeTracer.from_artifact(
                artifact.path, device=self._device, encoding_cache_size=config.encoding_cache_size
            )
            self._version, self._cache_size = version, config.encoding_cache_size
            logger.info(
                "difficulty model %s loaded on %s (window %d rows, encoding cache %d)",
                version,
                self._device,
                self._tracer.max_history,
                config.encoding_cache_size,
            )
        self._band = config.target_band

    def predict(
        self, history: list[Interaction], candidates: list[Exercise], trace: bool = False
    ) -> DifficultyResponse:
        assert self._tracer is not None, "reconfigure() loads the model before traffic"
        raw = self._tracer.predict(history, [(c.item_id, c.skill_id) for c in candidates])
        self._record_cache()
        predictions = [_prediction(p) for p in raw]
        return DifficultyResponse(
            predictions=predictions,
            recommended=predictions[recommend(raw, band=self._band)],
            target_band=self._band,
            history_length=len(history),
            trace=[_prediction(p) for p in self._tracer.trace(history)] if trace else None,
            model_version=self._version,
        )

    def mastery(self, history: list[Interaction]) -> list[SkillMastery]:
        assert self._tracer is not None, "reconfigure() loads the model before traffic"
        attempts: dict[str, int] = {}
        for step in history:
            attempts[step.skill_id] = attempts.get(step.skill_id, 0) + 1
        return [
            SkillMastery(
                skill_id=skill,
                name=self._tracer.skill_name(skill),
                mastery=p,
                attempts=attempts.get(skill, 0),
            )
            for skill, p in self._tracer.mastery(history).items()
        ]

    def _record_cache(self) -> None:
        if self._tracer is not None and self._tracer.encoding_cache is not None:
            stats = self._tracer.encoding_cache.stats()
            self._cache_reuse.set(stats["reuse_ratio"])
            self._cache_entries.set(stats["entries"])

    def model_version(self) -> str:
        return self._version
