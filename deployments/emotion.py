"""Emotion deployment: the fine-tuned encoder behind Serve's dynamic batching, with every
version of the rollout (champion, canary, shadow) loaded side by side."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import torch
from ray import serve

from deployments.batch_wait import BatchWaitWhenBusy
from deployments.config import EmotionUserConfig
from deployments.lifecycle.versions import Picked, VersionedModels
from deployments.replica_context import model_rollout
from deployments.schemas import EmotionResponse, EmotionResult, GoEmotionsScores
from models.common.registry import ModelRegistry
from models.emotion.artifact import ARTIFACT_FORMAT_V2, detect_format
from models.emotion.classifier import EmotionClassifier, EmotionPrediction
from models.emotion.quantization import read_recipe
from store import TutorStore

logger = logging.getLogger("ray.serve")
MODEL_NAME = "emotion"


def _warmed(classifier: EmotionClassifier) -> EmotionClassifier:
    """One forward pass before the version serves: torch's first call on a new process pays
    for its kernels' setup, which a replica started under load would charge to a learner."""
    classifier.predict(["warming up the encoder before it serves"])
    return classifier


def runtime_options(artifact: Path, backend: str, threads: int, device: str) -> dict:
    """``EmotionClassifier.from_artifact``'s runtime arguments for one version. ONNX Runtime
    only on CPUs and for fine-tuned (v2+) artifacts: a v1 artifact (frozen encoder + MLP head)
    has no fine-tuned encoder to export, so it runs on torch and can still be a canary. An int8
    version (``models.emotion.quantization``) runs on ONNX Runtime's CPU kernels whatever the
    setting and the device: its state head was fitted on its int8 encoder's features."""
    fine_tuned_on_cpu = device == "cpu" and detect_format(artifact) >= ARTIFACT_FORMAT_V2
    if read_recipe(artifact) is not None or (backend == "onnx" and fine_tuned_on_cpu):
        return {"backend": "onnx", "threads": threads}
    return {}


def to_result(prediction: EmotionPrediction) -> EmotionResult:
    return EmotionResult(
        state=prediction.state,
        confidence=prediction.confidence,
        states=prediction.states,
        goemotions=GoEmotionsScores(scores=prediction.scores, predicted=prediction.predicted),
    )


class EmotionDeployment:
    def __init__(
        self,
        *,
        registry_dir: str | Path,
        store_uri: str,
        torch_threads: int = 1,
        backend: str = "torch",
        store: TutorStore | None = None,
    ) -> None:
        """``backend``: the encoder's runtime on CPUs (``torch`` or ``onnx``); a GPU replica
        runs torch. ``torch_threads``: the runtime's intra-op threads."""
        torch.set_num_threads(torch_threads)
        registry = ModelRegistry(registry_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"

        def load(version: str) -> EmotionClassifier:
            path = registry.load(MODEL_NAME, version).path
            runtime = runtime_options(path, backend, torch_threads, device)
            return _warmed(EmotionClassifier.from_artifact(path, device=device, **runtime))

        self._versions: VersionedModels[EmotionClassifier] = VersionedModels(
            MODEL_NAME,
            load=load,
            resolve=lambda v: registry.resolve_version(MODEL_NAME, v),
        )
        self._rollout = model_rollout(self._versions, store_uri=store_uri, store=store)
        self._batch_wait = BatchWaitWhenBusy(
            self._classify_batch.set_batch_wait_timeout_s, EmotionUserConfig().batch_wait_timeout_s
        )

    def reconfigure(self, user_config: dict) -> None:
        self.configure(EmotionUserConfig.model_validate(user_config))

    def configure(self, config: EmotionUserConfig) -> None:
        """The validated user_config applied (the emotion application's ingress adds its own)."""
        # Load first, then swap: requests in flight finish on the model they picked.
        self._rollout.apply(config)
        self._classify_batch.set_max_batch_size(config.max_batch_size)
        self._batch_wait.wait_s = config.batch_wait_timeout_s  # set per call: batch_wait.py

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _classify_batch(
        self, items: list[tuple[EmotionClassifier, str]]
    ) -> list[EmotionResult]:
        # The forward pass runs here, not in a thread: a thread starves request intake and
        # shrinks the batches (measured: batch 2.7 vs ~13 at 32 clients). A batch may hold
        # texts for two versions (a canary): one forward pass per version.
        by_model: dict[int, list[int]] = {}
        for index, (classifier, _) in enumerate(items):
            by_model.setdefault(id(classifier), []).append(index)
        results: list[EmotionResult | None] = [None] * len(items)
        for indices in by_model.values():
            classifier = items[indices[0]][0]
            predictions = classifier.predict([items[i][1] for i in indices])
            for i, prediction in zip(indices, predictions, strict=True):
                results[i] = to_result(prediction)
        return results  # type: ignore[return-value]

    async def classify(
        self,
        texts: list[str],
        *,
        learner_id: str | None = None,
        version: str | None = None,
        turn_id: str | None = None,
    ) -> EmotionResponse:
        """The texts' learning states from the version this learner gets (or the one named);
        with a ``turn_id``, a shadow version also scores them, after the answer is sent."""
        picked = self._versions.pick(learner_id, version)
        with self._rollout.serving(picked), self._batch_wait.call():
            results = await asyncio.gather(
                *(self._classify_batch((picked.model, text)) for text in texts)
            )
        shadow = self._versions.shadow()
        if shadow is not None and turn_id is not None:
            self._rollout.spawn(self._shadow(shadow, picked, texts, turn_id, learner_id or ""))
        return EmotionResponse(results=list(results), model_version=picked.version)

    async def _shadow(
        self,
        shadow: Picked[EmotionClassifier],
        served: Picked[EmotionClassifier],
        texts: list[str],
        turn_id: str,
        learner_id: str,
    ) -> None:
        # In the replica's low-priority shadow thread: the forward pass must not hold the event
        # loop that takes the next requests (torch releases the GIL while it computes), nor
        # take CPU from them.
        predictions = await self._rollout.run_shadow(shadow.model.predict, texts)
        first = predictions[0]
        await self._rollout.save_shadow(
            shadow=shadow,
            served=served,
            turn_id=turn_id,
            learner_id=learner_id,
            output={"state": first.state, "states": first.states},
        )

    def model_version(self) -> str:
        return self._versions.plan.champion

    def rollout(self) -> dict:
        return self._versions.plan.describe()
