"""The tutor as one FastAPI process: what a user would write instead of a Serve graph.

The same four models at the versions ``serve_config.yaml`` serves, the same tutoring logic
(``deployments.tutoring``: ``TurnRunner`` and ``TutorService``) and the same SQLite store; the
deployments' handles are replaced by in-process objects whose ``.method.remote(...)`` runs the
model here. So the only difference from the project is the serving architecture. Forward passes
and store reads run in threads (``asyncio.to_thread``, as FastAPI's docs advise for blocking
code, and as the Difficulty and Personalization deployments do); torch keeps its default thread
count. No Ray is imported.

Run: ``python -m benchmarks.peers.monolith_app --port 8100 --store-uri sqlite:///tmp/t.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from benchmarks.peers.noop_answers import noop_turn
from deployments.config import (
    DifficultyUserConfig,
    EmotionUserConfig,
    IngressUserConfig,
    PersonalizationUserConfig,
    config_deployments,
    router_config,
)
from deployments.errors import install_error_handlers
from deployments.schemas import (
    DifficultyResponse,
    EmotionResponse,
    EmotionResult,
    Exercise,
    GoEmotionsScores,
    LLMInfo,
    Prediction,
    StrategyChoice,
    TutorRequest,
    TutorResponse,
)
from deployments.tutoring.durable import StoreGuard
from deployments.tutoring.rewards import PolicyStatistics
from deployments.tutoring.turn_runner import TurnHandles, TurnRunner
from deployments.tutoring.tutor_service import TutorService
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.common.vocab import STRATEGIES
from models.difficulty.loader import load_tracer
from models.difficulty.tracer_api import Interaction, as_interactions, recommend
from models.emotion.classifier import EmotionClassifier
from models.llm.prompts import ReplyContext
from models.llm.router import ProviderRouter
from models.personalization.bandit import ArmStatistics, LinearThompsonSampling
from models.personalization.context import CONTEXT_DIM
from models.personalization.policy_version import PolicyVersion
from store import StoreError, TutorStore, open_store

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"
HTTP_ONLY_PATH = "/v1/tutor/http-only"


class _Remote:
    def __init__(self, method: Callable[..., Any]) -> None:
        self.remote = method


class InProcessHandle:
    """A model object in place of a Serve handle: ``handle.method.remote(...)`` calls it here."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> _Remote:
        return _Remote(getattr(self._target, name))

    def options(self, **_: Any) -> InProcessHandle:
        return self


class EmotionModel:
    """``deployments/emotion.py``'s classify, without Serve's batching or the rollout."""

    def __init__(self, registry: ModelRegistry, config: EmotionUserConfig, backend: str) -> None:
        artifact = registry.load("emotion", config.model_version)
        # Named always: EmotionClassifier's default is the version's own runtime (an int8
        # version runs on ONNX Runtime), and the torch lane must run torch.
        self.classifier = EmotionClassifier.from_artifact(artifact.path, backend=backend)
        self.classifier.predict(["warming up the encoder before it serves"])
        self.version = artifact.metadata.version

    async def classify(self, texts: list[str], **_: Any) -> EmotionResponse:
        predictions = await asyncio.to_thread(self.classifier.predict, texts)
        results = [
            EmotionResult(
                state=p.state,
                confidence=p.confidence,
                states=p.states,
                goemotions=GoEmotionsScores(scores=p.scores, predicted=p.predicted),
            )
            for p in predictions
        ]
        return EmotionResponse(results=results, model_version=self.version)


class DifficultyModel:
    """``deployments/difficulty.py``'s predict (knowledge tracing, its encoding cache)."""

    def __init__(self, registry: ModelRegistry, config: DifficultyUserConfig) -> None:
        artifact = registry.load("difficulty", config.model_version)
        self.tracer = load_tracer(artifact.path, encoding_cache_size=config.encoding_cache_size)
        self.band = config.target_band
        self.version = artifact.metadata.version

    async def predict(
        self, history: list[Interaction], candidates: list[Exercise], trace: bool = False, **_: Any
    ) -> DifficultyResponse:
        # The turn sends the history as rows (the wire form); in one process they are cheap.
        return await asyncio.to_thread(self._predict, as_interactions(history), candidates)

    def _predict(self, history: list[Interaction], candidates: list[Exercise]):
        raw = self.tracer.predict(history, [(c.item_id, c.skill_id) for c in candidates])
        predictions = [
            Prediction(
                item_id=p.item_id,
                skill_id=p.skill_id,
                p_correct=p.p_correct,
                flags=list(p.flags),
                basis=p.basis,
            )
            for p in raw
        ]
        return DifficultyResponse(
            predictions=predictions,
            recommended=predictions[recommend(raw, band=self.band)],
            target_band=self.band,
            history_length=len(history),
            model_version=self.version,
        )


class PersonalizationModel:
    """``deployments/personalization.py``'s choose: the bandit over statistics read from the
    store at most ``stats_max_age_s`` ago."""

    def __init__(
        self, registry: ModelRegistry, config: PersonalizationUserConfig, store: TutorStore
    ) -> None:
        artifact = registry.load("personalization", config.model_version)
        self.policy = PolicyVersion.from_artifact(artifact.path)
        thompson = self.policy.thompson_config(propensity_samples=config.propensity_samples)
        self.bandit = LinearThompsonSampling(STRATEGIES, CONTEXT_DIM, thompson)
        self.version = artifact.metadata.version
        self.store = store
        self.max_age_s = config.stats_max_age_s
        self.loaded_at = float("-inf")
        self.rng = np.random.default_rng()

    async def choose(self, context: list[float], **_: Any) -> tuple[StrategyChoice, str]:
        x = np.asarray(context, dtype=np.float64)
        return await asyncio.to_thread(self._choose, x), self.version

    def _choose(self, x: np.ndarray) -> StrategyChoice:
        if time.monotonic() - self.loaded_at >= self.max_age_s:
            try:
                stored = self.store.bandit_stats(self.policy.statistics)
                self.bandit.update_statistics(
                    {
                        arm: ArmStatistics.from_flat(s.a, s.b, s.n, s.reward_sum)
                        for arm, s in stored.items()
                        if s.b
                    }
                )
            except StoreError:
                pass  # stale statistics beat no choice, as in the deployment
            self.loaded_at = time.monotonic()
        choice = self.bandit.choose(x, self.rng)
        return StrategyChoice(name=choice.arm, propensity=choice.propensity)


class RouterModel:
    """``deployments/llm_router.py``: the provider router (offline without provider keys)."""

    def __init__(self, user_config: dict) -> None:
        self.router = ProviderRouter(router_config(user_config))

    async def respond(self, context: ReplyContext) -> tuple[str, LLMInfo, str | None]:
        text, info, error = await self.router.respond(context)
        return text, LLMInfo.model_validate(asdict(info)), error

    async def stream(self, context: ReplyContext) -> AsyncIterator[dict]:
        async for event in self.router.stream(context):
            if "llm" in event:
                event = {**event, "llm": LLMInfo.model_validate(asdict(event["llm"]))}
            yield event


def user_configs(config_path: Path) -> dict[str, dict]:
    """Each deployment's ``user_config`` in a Serve config file, by deployment name."""
    entries = config_deployments(yaml.safe_load(config_path.read_text()))
    return {name: d.get("user_config") or {} for name, d in entries.items()}


def build_runner(
    store: TutorStore,
    *,
    config_path: Path = DEFAULT_CONFIG,
    registry_dir: Path = DEFAULT_REGISTRY_ROOT,
    emotion_backend: str = "torch",
) -> TurnRunner:
    """The four models loaded here, at the served versions, behind the project's turn."""
    configs = user_configs(config_path)
    registry = ModelRegistry(registry_dir)
    ingress = IngressUserConfig.model_validate(configs.get("Ingress", {}))
    emotion = EmotionModel(
        registry, EmotionUserConfig.model_validate(configs["Emotion"]), emotion_backend
    )
    difficulty = DifficultyModel(
        registry, DifficultyUserConfig.model_validate(configs["Difficulty"])
    )
    personalization = PersonalizationModel(
        registry, PersonalizationUserConfig.model_validate(configs["Personalization"]), store
    )
    handles = TurnHandles(
        emotion=InProcessHandle(emotion),
        difficulty=InProcessHandle(difficulty),
        personalization=InProcessHandle(personalization),
        router=InProcessHandle(RouterModel(configs.get("LLMRouter", {}))),
    )
    return TurnRunner(
        handles,
        store,
        stage_timeout_s=ingress.stage_timeout_s,
        reply_timeout_s=ingress.reply_timeout_s,
        policy_statistics=PolicyStatistics(registry),
        guard=StoreGuard(store, timeout_s=ingress.store_timeout_s),
    )


def create_app(runner: TurnRunner) -> FastAPI:
    """POST /v1/tutor (as the project's), its HTTP-only twin and GET /healthz over one turn
    runner."""
    service = TutorService(runner)
    api = FastAPI(title="Tutor monolith", description="The four models in one process.")
    install_error_handlers(api, request_id=lambda: uuid.uuid4().hex)

    @api.post("/v1/tutor", response_model=TutorResponse)
    async def tutor(body: TutorRequest):
        result = await service.tutor(body, uuid.uuid4().hex)
        if isinstance(result, AsyncIterator):
            return StreamingResponse(result, media_type="text/event-stream")
        return result

    @api.post(HTTP_ONLY_PATH, response_model=TutorResponse)
    async def tutor_http_only(body: TutorRequest):
        # The same request and answer with no work between: what the process spends on HTTP,
        # validation and serialization a turn, to tell it from the turn's work (make
        # bench-peers: the CPU a turn of each).
        return noop_turn(body)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return api


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store-uri", required=True, help="e.g. sqlite:///tmp/tutor.db")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--emotion-backend", default="torch", help="torch or onnx")
    args = parser.parse_args(argv)
    ingress = IngressUserConfig.model_validate(user_configs(args.config).get("Ingress", {}))
    store = open_store(args.store_uri, timeout_s=ingress.store_timeout_s)
    runner = build_runner(store, config_path=args.config, emotion_backend=args.emotion_backend)
    uvicorn.run(create_app(runner), host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
