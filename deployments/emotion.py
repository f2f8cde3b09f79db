"""Emotion deployment: the fine-tuned encoder behind Serve's dynamic batching."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import torch
from ray import serve

from deployments.config import EmotionUserConfig
from deployments.schemas import EmotionResponse, EmotionResult, GoEmotionsScores
from models.common.registry import ModelRegistry
from models.emotion.classifier import EmotionClassifier, EmotionPrediction

logger = logging.getLogger("ray.serve")
MODEL_NAME = "emotion"


def to_result(prediction: EmotionPrediction) -> EmotionResult:
    return EmotionResult(
        state=prediction.state,
        confidence=prediction.confidence,
        states=prediction.states,
        goemotions=GoEmotionsScores(scores=prediction.scores, predicted=prediction.predicted),
    )


class EmotionDeployment:
    def __init__(self, *, registry_dir: str | Path, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self._registry = ModelRegistry(registry_dir)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._classifier: EmotionClassifier | None = None
        self._version = ""

    def reconfigure(self, user_config: dict) -> None:
        config = EmotionUserConfig.model_validate(user_config)
        version = self._registry.resolve_version(MODEL_NAME, config.model_version)
        if version != self._version:
            artifact = self._registry.load(MODEL_NAME, version)
            # Load first, then swap: requests in flight finish on the old model.
            self._classifier = EmotionClassifier.from_artifact(artifact.path, device=self._device)
            self._version = version
            logger.info("emotion model %s loaded on %s", version, self._device)
        self._classify_batch.set_max_batch_size(config.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _classify_batch(self, texts: list[str]) -> list[EmotionResult]:
        # The forward pass runs here, not in a thread: a thread starves request intake and
        # shrinks the batches (measured: batch 2.7 vs ~13 at 32 clients).
        assert self._classifier is not None, "reconfigure() loads the model before traffic"
        return [to_result(p) for p in self._classifier.predict(texts)]

    async def classify(self, texts: list[str]) -> EmotionResponse:
        results = await asyncio.gather(*(self._classify_batch(text) for text in texts))
        return EmotionResponse(results=list(results), model_version=self._version)

    def model_version(self) -> str:
        return self._version
