"""Difficulty deployment: knowledge tracing over the learner's answer history."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from deployments.config import DifficultyUserConfig
from deployments.schemas import (
    MAX_HISTORY,
    DifficultyResponse,
    Exercise,
    Prediction,
    SkillMastery,
)
from models.knowledge_tracing import CandidatePrediction, Interaction, KnowledgeTracer, recommend
from models.registry import ModelRegistry

logger = logging.getLogger("ray.serve")
MODEL_NAME = "difficulty"


def _prediction(p: CandidatePrediction) -> Prediction:
    return Prediction(
        item_id=p.item_id, skill_id=p.skill_id, p_correct=p.p_correct, flags=list(p.flags)
    )


class DifficultyDeployment:
    def __init__(self, *, registry_dir: str | Path, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self._registry = ModelRegistry(registry_dir)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._tracer: KnowledgeTracer | None = None
        self._version = ""
        self._band = (0.70, 0.85)

    def reconfigure(self, user_config: dict) -> None:
        config = DifficultyUserConfig.model_validate(user_config)
        version = self._registry.resolve_version(MODEL_NAME, config.model_version)
        if version != self._version:
            artifact = self._registry.load(MODEL_NAME, version)
            self._tracer = KnowledgeTracer.from_artifact(
                artifact.path, device=self._device, max_history=MAX_HISTORY
            )
            self._version = version
            logger.info("difficulty model %s loaded on %s", version, self._device)
        self._band = config.target_band

    def predict(
        self, history: list[Interaction], candidates: list[Exercise], trace: bool = False
    ) -> DifficultyResponse:
        assert self._tracer is not None, "reconfigure() loads the model before traffic"
        raw = self._tracer.predict(history, [(c.item_id, c.skill_id) for c in candidates])
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

    def model_version(self) -> str:
        return self._version
