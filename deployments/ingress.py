"""Ingress deployment: the HTTP API. HTTP concerns only: validation, status codes, streaming."""

# No `from __future__ import annotations` here: Serve re-wraps the route methods, and FastAPI
# must see the real annotation objects to know a pydantic body from a query parameter.

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from deployments.config import IngressUserConfig
from deployments.errors import ERROR_RESPONSES, error_response, install_error_handlers, required
from deployments.request_context import current_request_id
from deployments.schemas import (
    MAX_HISTORY,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ComponentHealth,
    DifficultyRequest,
    DifficultyResponse,
    EmotionRequest,
    EmotionResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    LearnerProfile,
    ModelList,
    Pace,
    TutorRequest,
    TutorResponse,
)
from deployments.telemetry import TurnMetrics
from deployments.tutoring import openai_chat
from deployments.tutoring.emotion_coalescing import CoalescedEmotion
from deployments.tutoring.turn import TurnHandles, TurnRunner
from models.difficulty.tracer import Interaction
from models.emotion.learning_states import emotion_trend
from models.personalization.context import CONTEXT_DIM, learner_pace
from store import TutorStore, open_store

logger = logging.getLogger("ray.serve")
LearnerId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]

api = FastAPI(
    title="Adaptive tutor",
    version="1",
    description="Four models per learner message: emotion, difficulty, strategy, reply.",
    responses=ERROR_RESPONSES,
)
install_error_handlers(api)


def _event_stream_doc(description: str, events: list[str]) -> dict:
    """OpenAPI for a 200 that may also be server-sent events (as schemathesis checks them)."""
    schema = {
        "type": "object",
        "description": description,
        "properties": {
            "event": {"enum": events},
            "data": {"type": "string", "description": "a JSON object"},
        },
    }
    return {200: {"content": {"text/event-stream": {"schema": schema}}}}


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _state_event(turn_id, learner_state, strategy, versions, degraded) -> str:
    """The stream's first event: what the models found, before any reply token."""
    return _sse(
        "state",
        {
            "turn_id": turn_id,
            "learner_state": learner_state.model_dump(),
            "strategy": strategy.model_dump(),
            "model_versions": versions,
            "degraded": list(degraded),
        },
    )


async def _replay_events(stored: TutorResponse) -> AsyncIterator[str]:
    """A retried streaming turn: the stored turn as the same three kinds of event."""
    yield _state_event(
        stored.turn_id,
        stored.learner_state,
        stored.strategy,
        stored.model_versions,
        stored.degraded,
    )
    yield _sse("token", {"text": stored.reply})
    yield _sse("summary", stored.model_dump())


@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        emotion,
        difficulty,
        personalization,
        router,
        *,
        store_uri: str,
        store: TutorStore | None = None,
    ) -> None:
        self._handles = TurnHandles(emotion, difficulty, personalization, router)
        self._store = store or open_store(store_uri)
        self._config = IngressUserConfig()
        self._metrics = TurnMetrics()
        self._runner = TurnRunner(self._handles, self._store, stage_timeout_s=10.0)
        self._emotion = CoalescedEmotion(
            emotion,
            max_texts=self._config.emotion_batch_max_texts,
            calls_in_flight=self._config.emotion_calls_in_flight,
        )

    def reconfigure(self, user_config: dict) -> None:
        self._config = IngressUserConfig.model_validate(user_config)
        self._runner.stage_timeout_s = self._config.stage_timeout_s
        self._runner.reply_timeout_s = self._config.reply_timeout_s
        self._emotion.configure(
            max_texts=self._config.emotion_batch_max_texts,
            calls_in_flight=self._config.emotion_calls_in_flight,
        )

    # ---- /v1/tutor ------------------------------------------------------------------------

    @api.post(
        "/v1/tutor",
        response_model=TutorResponse,
        responses=_event_stream_doc(
            "With stream=true: state, token..., summary.", ["state", "token", "error", "summary"]
        ),
    )
    async def tutor(self, body: TutorRequest):
        try:
            replayed = await self._runner.replay(body)
        except PermissionError as exc:
            return error_response(409, str(exc))
        if replayed is not None:
            if body.stream:
                return StreamingResponse(_replay_events(replayed), media_type="text/event-stream")
            return replayed
        state = await self._runner.prepare(body, current_request_id())
        versions = self._runner.model_versions(state)
        if body.stream:
            return StreamingResponse(
                self._stream_turn(state, versions), media_type="text/event-stream"
            )
        reply, llm = await self._runner.reply(state)
        response = await self._runner.finish(state, reply, llm)
        self._record(response, stream=False)
        return response

    async def _stream_turn(self, state, versions: dict[str, str]) -> AsyncIterator[str]:
        yield _state_event(
            state.turn_id, state.learner_state(), state.strategy, versions, state.degraded
        )
        async for event in self._runner.stream_turn(state):
            if event["type"] == "token":
                yield _sse("token", {"text": event["text"]})
            elif event["type"] == "error":
                yield _sse("error", {"message": event["message"]})
            else:
                self._record(event["response"], stream=True)
                yield _sse("summary", event["response"].model_dump())

    # ---- OpenAI-compatible ----------------------------------------------------------------

    @api.get("/v1/models", response_model=ModelList)
    async def models(self):
        return openai_chat.model_list()

    @api.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses=_event_stream_doc(
            "With stream=true: `data:` chat.completion.chunk objects (the last one carries "
            "`tutor`), then `data: [DONE]`.",
            ["message"],
        ),
    )
    async def chat_completions(self, body: ChatCompletionRequest):
        try:
            request = openai_chat.tutor_request(body)
        except ValueError as exc:
            return error_response(422, str(exc))
        state = await self._runner.prepare(request, current_request_id())
        if body.stream:
            return StreamingResponse(self._stream_chat(state), media_type="text/event-stream")
        reply, llm = await self._runner.reply(state)
        response = await self._runner.finish(state, reply, llm)
        self._record(response, stream=False)
        return openai_chat.completion(response, request.message)

    async def _stream_chat(self, state) -> AsyncIterator[str]:
        chunks = openai_chat.ChunkWriter(state.turn_id)
        yield chunks.role()
        error = None
        async for event in self._runner.stream_turn(state):
            if event["type"] == "token":
                yield chunks.content(event["text"])
            elif event["type"] == "error":
                error = event["message"]
            else:
                self._record(event["response"], stream=True)
                yield chunks.error(error) if error else chunks.finish(event["response"])
        yield chunks.done()

    def _record(self, response: TutorResponse, *, stream: bool) -> None:
        self._metrics.record_turn(
            timings_ms=response.timings_ms,
            state=response.learner_state.emotion.state,
            strategy=response.strategy.name,
            degraded=response.degraded,
            stream=stream,
        )
        logger.info(
            "turn %s learner=%s state=%s strategy=%s provider=%s total_ms=%s degraded=%s",
            response.turn_id,
            response.learner_id,
            response.learner_state.emotion.state,
            response.strategy.name,
            response.llm.provider,
            response.timings_ms.get("total"),
            response.degraded,
        )

    # ---- model endpoints ------------------------------------------------------------------

    @api.post("/v1/emotion", response_model=EmotionResponse)
    async def emotion(self, body: EmotionRequest):
        return await required(
            "emotion model",
            self._emotion.classify(body.texts),
            timeout_s=self._config.stage_timeout_s,
        )

    @api.post("/v1/difficulty", response_model=DifficultyResponse)
    async def difficulty(self, body: DifficultyRequest):
        history: list[Interaction] = []
        if body.learner_id is not None:
            stored = await asyncio.to_thread(
                self._store.answers, body.learner_id, limit=MAX_HISTORY
            )
            history = [Interaction(a.item_id, a.skill_id, a.correct) for a in stored]
        history += [Interaction(h.item_id, h.skill_id, h.correct) for h in body.history]
        return await required(
            "difficulty model",
            self._handles.difficulty.predict.remote(
                history[-MAX_HISTORY:], body.candidates, body.trace
            ),
            timeout_s=self._config.stage_timeout_s,
        )

    # ---- feedback and profiles ------------------------------------------------------------

    @api.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(self, body: FeedbackRequest):
        turn = await asyncio.to_thread(self._store.get_turn, body.turn_id)
        if turn is None:
            return error_response(404, f"unknown turn_id {body.turn_id!r}")
        return await required(
            "personalization model",
            self._handles.personalization.feedback.remote(
                turn_id=body.turn_id,
                reward=body.reward,
                answer=body.answer.model_dump() if body.answer else None,
                now=time.time(),
            ),
            timeout_s=self._config.stage_timeout_s,
        )

    @api.get("/v1/learners/{learner_id}", response_model=LearnerProfile)
    async def learner(self, learner_id: LearnerId):
        learner = await asyncio.to_thread(self._store.get_learner, learner_id)
        if learner is None:
            return error_response(404, f"unknown learner_id {learner_id!r}")
        answers = await asyncio.to_thread(self._store.answers, learner_id, limit=MAX_HISTORY)
        turns = await asyncio.to_thread(self._store.recent_turns, learner_id, limit=200)
        history = [Interaction(a.item_id, a.skill_id, a.correct) for a in answers]
        degraded: list[str] = []

        async def optional(name: str, call, fallback):
            try:
                return await asyncio.wait_for(call, timeout=self._config.stage_timeout_s)
            except Exception as exc:  # the rest of the profile is still worth answering
                degraded.append(f"{name}: {type(exc).__name__}")
                return fallback

        contexts = [t.context for t in turns if len(t.context) == CONTEXT_DIM]

        async def preferred() -> str | None:
            if not contexts:
                return None
            call = self._handles.personalization.preferred.remote(contexts[-1])
            return await optional("personalization", call, None)

        mastery, strategies, version, preferred_strategy = await asyncio.gather(
            optional("difficulty", self._handles.difficulty.mastery.remote(history), []),
            optional(
                "personalization",
                self._handles.personalization.strategy_stats.remote(learner_id),
                {},
            ),
            optional("difficulty", self._handles.difficulty.model_version.remote(), "unavailable"),
            preferred(),
        )
        median_gap, sessions = learner_pace([t.ts for t in turns])
        return LearnerProfile(
            learner_id=learner_id,
            turn_count=learner.turn_count,
            answer_count=len(answers),
            created_at=learner.created_at,
            last_turn_at=learner.last_turn_at,
            mastery=mastery,
            emotion_trend=emotion_trend([t.emotion.get("states", {}) for t in turns]),
            pace=Pace(median_s_between_turns=median_gap, sessions=sessions),
            strategies=strategies,
            preferred_strategy=preferred_strategy,
            model_version=version,
            degraded=sorted(set(degraded)),
        )

    # ---- health ---------------------------------------------------------------------------

    @api.get("/healthz", response_model=HealthResponse)
    async def healthz(self):
        async def probe(name: str, handle) -> tuple[str, ComponentHealth, str | None]:
            try:
                version = await asyncio.wait_for(handle.model_version.remote(), timeout=5)
                return name, ComponentHealth(ok=True), version
            except Exception as exc:
                return name, ComponentHealth(ok=False, detail=type(exc).__name__), None

        handles = {
            "Emotion": self._handles.emotion,
            "Difficulty": self._handles.difficulty,
            "Personalization": self._handles.personalization,
        }
        probes = await asyncio.gather(*(probe(n, h) for n, h in handles.items()))
        deployments = {name: health for name, health, _ in probes}
        versions = {name.lower(): v for name, _, v in probes if v is not None}
        providers = {}
        try:
            router = self._handles.router.provider_states.remote()
            providers = await asyncio.wait_for(router, timeout=5)
            usable = sum(p.configured and p.breaker != "open" for p in providers.values())
            detail = f"{usable} of {len(providers)} providers usable, then the offline responder"
            deployments["LLMRouter"] = ComponentHealth(ok=True, detail=detail)
        except Exception as exc:
            deployments["LLMRouter"] = ComponentHealth(ok=False, detail=type(exc).__name__)
        deployments["Ingress"] = ComponentHealth(ok=True)
        try:
            await asyncio.to_thread(self._store.ping)
            store = ComponentHealth(ok=True)
        except Exception as exc:
            store = ComponentHealth(ok=False, detail=str(exc))
        healthy = store.ok and all(h.ok for h in deployments.values())
        body = HealthResponse(
            status="ok" if healthy else "degraded",
            deployments=deployments,
            store=store,
            model_versions=versions,
            providers=providers,
        )
        return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())
