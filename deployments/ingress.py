"""Ingress deployment: the HTTP API. HTTP concerns only: routes, status codes, streaming.

Each route hands its validated body to a Serve-free service of ``deployments/tutoring/`` and
wraps what comes back (a schema, or an event stream) in a response; the services raise
``deployments.tutoring.exceptions`` errors, which ``deployments/errors.py`` turns into the one
error shape.
"""

# No `from __future__ import annotations` here: Serve re-wraps the route methods, and FastAPI
# must see the real annotation objects to know a pydantic body from a query parameter.

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from deployments.config import EMOTION_APP, IngressUserConfig
from deployments.http_edge import guarded_api
from deployments.replica_context import current_request_id
from deployments.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    DifficultyRequest,
    DifficultyResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    LearnerProfile,
    ModelList,
    TutorRequest,
    TutorResponse,
)
from deployments.security import tenancy
from deployments.security.gate import Gate
from deployments.security.middleware import install_gate, principal_of
from deployments.telemetry import AdmissionMetrics, OutboxMetrics, TurnMetrics
from deployments.tutoring import openai_chat
from deployments.tutoring.admission import Admission, admit
from deployments.tutoring.durable import PendingWrites, StoreGuard
from deployments.tutoring.health import HealthCheck
from deployments.tutoring.learners import Learners
from deployments.tutoring.predictions import Predictions
from deployments.tutoring.rewards import PolicyStatistics
from deployments.tutoring.turn_runner import TurnHandles, TurnRunner
from deployments.tutoring.tutor_service import TutorService
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from store import TutorStore, open_store
from store.outbox import Outbox

LearnerId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


api = guarded_api(
    title="Adaptive tutor",
    description="Four models per learner message: emotion, difficulty, strategy, reply.",
)


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


def _respond(result):
    """A service's answer as it is, or its event stream as server-sent events."""
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream")
    return result


def _shown(principal: tenancy.Principal | None, result):
    """A /v1/tutor answer (or stream) with the learner id as the client sent it."""
    if isinstance(result, AsyncIterator):
        return tenancy.unscope_events(principal, result)
    return result.model_copy(
        update={"learner_id": tenancy.unscope_learner(principal, result.learner_id)}
    )


@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        difficulty,
        personalization,
        router,
        *,
        emotion=None,
        store_uri: str,
        registry_dir: str = str(DEFAULT_REGISTRY_ROOT),
        store: TutorStore | None = None,
        auth_enabled: bool = True,
        outbox_dir: str | None = None,
    ) -> None:
        """``emotion``: a handle to Emotion (default: the emotion application's deployment);
        ``auth_enabled``: decided by build_app (TUTOR_AUTH and the proxy's host);
        ``outbox_dir``: where writes the store cannot take are journaled."""
        config = IngressUserConfig()
        # A store call waits on the backend about as long as a turn waits for it, so a call
        # given up on frees its thread soon after (SQLite's default busy wait is 10 s).
        store = store or open_store(store_uri, timeout_s=config.store_timeout_s)
        if emotion is None:  # the emotion application's ingress (deployments/emotion_ingress.py)
            emotion = serve.get_deployment_handle("Emotion", app_name=EMOTION_APP)
        handles = TurnHandles(emotion, difficulty, personalization, router)
        statistics = PolicyStatistics(ModelRegistry(registry_dir))
        self._guard = guard = StoreGuard(store, timeout_s=config.store_timeout_s)
        pending = None
        if outbox_dir is not None:  # the journal names the store without its credentials
            outbox = Outbox(outbox_dir, store_id=store_uri.split("@")[-1])
            pending = PendingWrites(outbox, guard, statistics=statistics, observer=OutboxMetrics())
        runner = TurnRunner(
            handles,
            store,
            stage_timeout_s=config.stage_timeout_s,
            reply_timeout_s=config.reply_timeout_s,
            policy_statistics=statistics,
            guard=guard,
            pending=pending,
        )
        self._turns = TutorService(runner, observer=TurnMetrics())
        self._predictions = Predictions(handles, store, timeout_s=config.stage_timeout_s)
        self._learners = Learners(
            handles, store, timeout_s=config.stage_timeout_s, guard=guard, pending=pending
        )
        self._health = HealthCheck(handles, store, guard=guard, pending=pending)
        shed = AdmissionMetrics()
        self._admission = {
            pool: Admission(config.admission_limits(pool), on_refused=shed.observer(pool))
            for pool in ("turns", "predictions")
        }
        self._gate = Gate(store, enabled=auth_enabled, settings=config.gate_settings())
        install_gate(self._gate)

    def reconfigure(self, user_config: dict) -> None:
        config = IngressUserConfig.model_validate(user_config)
        self._turns.runner.stage_timeout_s = config.stage_timeout_s
        self._turns.runner.reply_timeout_s = config.reply_timeout_s
        self._guard.timeout_s = config.store_timeout_s
        self._predictions.timeout_s = self._learners.timeout_s = config.stage_timeout_s
        for pool, admission in self._admission.items():
            admission.configure(config.admission_limits(pool))
        self._gate.configure(config.gate_settings())

    @api.post(
        "/v1/tutor",
        response_model=TutorResponse,
        responses=_event_stream_doc(
            "With stream=true: state, token..., summary.", ["state", "token", "error", "summary"]
        ),
    )
    async def tutor(self, body: TutorRequest, request: Request):
        request_id = current_request_id()
        principal = principal_of(request.scope)
        body = body.model_copy(
            update={"learner_id": tenancy.scope_learner(principal, body.learner_id)}
        )
        result = await admit(self._admission["turns"], lambda: self._turns.tutor(body, request_id))
        return _respond(_shown(principal, result))

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
    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        request_id = current_request_id()
        # The learner is `user`; no answer names it back.
        learner_id = tenancy.scope_learner(principal_of(request.scope), body.user)
        return _respond(
            await admit(
                self._admission["turns"],
                lambda: self._turns.chat(body, request_id, learner_id=learner_id),
            )
        )

    @api.post("/v1/difficulty", response_model=DifficultyResponse)
    async def difficulty(self, body: DifficultyRequest, request: Request):
        if body.learner_id is not None:
            learner_id = tenancy.scope_learner(principal_of(request.scope), body.learner_id)
            body = body.model_copy(update={"learner_id": learner_id})
        return await admit(
            self._admission["predictions"], lambda: self._predictions.difficulty(body)
        )

    @api.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        responses={202: {"model": FeedbackResponse, "description": "Queued in the outbox."}},
    )
    async def feedback(self, body: FeedbackRequest, request: Request):
        principal = principal_of(request.scope)
        response = await self._learners.feedback(
            body, owns=lambda learner_id: tenancy.owns(principal, learner_id)
        )
        if response.queued:  # journaled, applied when the store takes the turn: accepted
            return JSONResponse(status_code=202, content=response.model_dump())
        return response

    @api.get("/v1/learners/{learner_id}", response_model=LearnerProfile)
    async def learner(self, learner_id: LearnerId, request: Request):
        principal = principal_of(request.scope)
        profile = await self._learners.profile(tenancy.scope_learner(principal, learner_id))
        return profile.model_copy(update={"learner_id": learner_id})

    @api.get("/healthz", response_model=HealthResponse)
    async def healthz(self):
        health = await self._health.check()
        status = 200 if health.status == "ok" else 503
        return JSONResponse(status_code=status, content=health.model_dump())
