"""A no-op Serve graph of the tutor turn's shape: what Serve's hops alone cost a turn (the floor).

The same five deployments as ``deployments.app`` (names, placement, replica counts and
``max_ongoing_requests`` come from ``serve_config.yaml``: ``benchmarks/peers/tutor_floor.py``
writes the config), called in the real turn's order with arguments and answers of the real
types and sizes (``deployments/tutoring/turn_runner.py``: emotion and difficulty at once, then
the strategy, then the reply). Each model deployment answers a constant: no model, no store.
"""

# No `from __future__ import annotations`: Serve re-wraps the ingress's route methods, and
# FastAPI must see the real annotation objects (as in deployments/ingress.py).

import asyncio
import uuid
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from benchmarks.peers.noop_answers import (
    LLM_INFO,
    NOOP_VERSION,
    REPLY,
    STRATEGY,
    difficulty_response,
    emotion_response,
    tutor_response,
)
from deployments.config import AppArgs
from deployments.schemas import (
    DifficultyResponse,
    EmotionResponse,
    Exercise,
    LLMInfo,
    StrategyChoice,
    TutorRequest,
    TutorResponse,
)
from deployments.tutoring.history import as_rows
from models.difficulty.tracer import Interaction
from models.llm.prompts import ReplyContext
from models.personalization.context import CONTEXT_DIM


class FloorEmotion:
    async def classify(
        self,
        texts: list[str],
        *,
        learner_id: str | None = None,
        version: str | None = None,
        turn_id: str | None = None,
    ) -> EmotionResponse:
        return emotion_response(texts)


class FloorDifficulty:
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
        return difficulty_response(len(history), candidates)


class FloorPersonalization:
    async def choose(
        self, context: list[float], *, learner_id: str | None = None, turn_id: str | None = None
    ) -> tuple[StrategyChoice, str]:
        return STRATEGY, NOOP_VERSION


class FloorRouter:
    async def respond(self, context: ReplyContext) -> tuple[str, LLMInfo, str | None]:
        return REPLY, LLM_INFO, None


async def floor_turn(handles: Any, request: TutorRequest) -> TutorResponse:
    """The real turn's calls, in its order and with its argument types, around no work.
    ``handles``: ``emotion``, ``difficulty``, ``personalization``, ``router`` (Serve handles, or
    anything whose ``.method.remote(...)`` is awaitable)."""
    turn_id = request.turn_id or uuid.uuid4().hex
    history = as_rows([request.answer] if request.answer else [])
    learner = request.learner_id

    async def no_difficulty() -> None:
        return None

    emotion, difficulty = await asyncio.gather(
        handles.emotion.classify.remote([request.message], learner_id=learner, turn_id=turn_id),
        handles.difficulty.predict.remote(
            history, request.candidates, learner_id=learner, turn_id=turn_id
        )
        if request.candidates
        else no_difficulty(),
    )
    strategy, policy_version = await handles.personalization.choose.remote(
        [0.0] * CONTEXT_DIM, learner_id=learner, turn_id=turn_id
    )
    result = emotion.results[0]
    context = ReplyContext(
        message=request.message, strategy=strategy.name, emotion_state=result.state
    )
    reply, llm, _ = await handles.router.respond.remote(context)
    return tutor_response(
        request,
        turn_id,
        emotion=emotion,
        difficulty=difficulty,
        strategy=strategy,
        policy_version=policy_version,
        reply=reply,
        llm=llm,
    )


api = FastAPI(title="Tutor floor", description="A no-op graph of the tutor turn's shape.")


@serve.ingress(api)
class FloorIngress:
    def __init__(self, emotion, difficulty, personalization, router) -> None:
        self.emotion = emotion
        self.difficulty = difficulty
        self.personalization = personalization
        self.router = router

    @api.post("/v1/tutor", response_model=TutorResponse)
    async def tutor(self, body: TutorRequest):
        return await floor_turn(self, body)

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}


FLOOR_DEPLOYMENTS = {
    "Ingress": FloorIngress,
    "Emotion": FloorEmotion,
    "Difficulty": FloorDifficulty,
    "Personalization": FloorPersonalization,
    "LLMRouter": FloorRouter,
}


def _use_gpu(args: AppArgs) -> bool:
    """As the real app places its neural deployments (``accelerator: auto``)."""
    if args.accelerator != "auto":
        return args.accelerator == "gpu"
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def build_app(raw_args: dict[str, Any]) -> Application:
    """The floor's graph with the real app's actor options (``args.placement``); replica
    counts and request limits come from the config's ``deployments`` section, as for the real
    app."""
    args = AppArgs.model_validate(raw_args or {})
    use_gpu = _use_gpu(args)

    def bound(name: str, *children: Any) -> Application:
        options = {"ray_actor_options": args.actor_options(name, use_gpu=use_gpu)}
        cls = FLOOR_DEPLOYMENTS[name]
        return serve.deployment(cls, name=name).options(**options).bind(*children)

    return bound(
        "Ingress",
        bound("Emotion"),
        bound("Difficulty"),
        bound("Personalization"),
        bound("LLMRouter"),
    )
