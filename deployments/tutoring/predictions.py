"""/v1/emotion and /v1/difficulty: one model's answer, with nothing to fall back on."""

from __future__ import annotations

from deployments.schemas import (
    DifficultyRequest,
    DifficultyResponse,
    EmotionRequest,
    EmotionResponse,
)
from deployments.tutoring.emotion_coalescing import CoalescedEmotion
from deployments.tutoring.exceptions import required
from deployments.tutoring.history import learner_history
from deployments.tutoring.turn_runner import TurnHandles
from store import TutorStore


class Predictions:
    def __init__(
        self,
        handles: TurnHandles,
        store: TutorStore,
        emotion: CoalescedEmotion,
        *,
        timeout_s: float,
    ) -> None:
        """``emotion`` coalesces concurrent /v1/emotion requests into few Emotion calls."""
        self._handles = handles
        self._store = store
        self._emotion = emotion
        self.timeout_s = timeout_s

    async def emotion(self, body: EmotionRequest) -> EmotionResponse:
        if body.model_version is None:
            call = self._emotion.classify(body.texts)
        else:  # rare (a named version): not coalesced with the champion's requests
            call = self._handles.emotion.classify.remote(body.texts, version=body.model_version)
        return await required("emotion model", call, timeout_s=self.timeout_s)

    async def difficulty(self, body: DifficultyRequest) -> DifficultyResponse:
        """P(correct) per candidate after the learner's stored answers and the posted ones."""
        history = await learner_history(self._store, body.learner_id, body.history)
        call = self._handles.difficulty.predict.remote(
            history,
            body.candidates,
            body.trace,
            learner_id=body.learner_id,
            version=body.model_version,
        )
        return await required("difficulty model", call, timeout_s=self.timeout_s)
