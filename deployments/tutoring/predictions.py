"""/v1/difficulty: one model's answer, with nothing to fall back on. (/v1/emotion is answered by
the Emotion deployment itself: deployments/emotion_ingress.py.)"""

from __future__ import annotations

from deployments.schemas import DifficultyRequest, DifficultyResponse
from deployments.tutoring.exceptions import required
from deployments.tutoring.history import learner_history
from deployments.tutoring.turn_runner import TurnHandles
from store import TutorStore


class Predictions:
    def __init__(
        self,
        handles: TurnHandles,
        store: TutorStore,
        *,
        timeout_s: float,
    ) -> None:
        self._handles = handles
        self._store = store
        self.timeout_s = timeout_s

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
