"""LLMRouter deployment: one ``models.llm.router.ProviderRouter`` per replica, behind Serve.

The routing itself (ranking, breakers, fallback, retries) is plain Python in
``models/llm/router.py``; this class feeds it the user_config, the LocalLM handle and the
replica's Prometheus metrics, and turns its results into the API's schemas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import httpx

from deployments.config import router_config
from deployments.schemas import LLMInfo, ProviderState
from deployments.telemetry import RouterMetrics
from models.llm.prompts import ReplyContext
from models.llm.router import LocalModel, ProviderRouter, RouterObserver


def _local_model(handle: Any) -> LocalModel:
    """The LocalLM deployment's streaming method, as the router calls a local model."""

    def stream(messages: list[dict[str, str]], max_tokens: int, temperature: float):
        return handle.options(stream=True).stream.remote(messages, max_tokens, temperature)

    return stream


def _api_event(event: dict) -> dict:
    if "llm" in event:
        return {**event, "llm": LLMInfo.model_validate(asdict(event["llm"]))}
    return event


class LLMRouterDeployment:
    def __init__(
        self,
        *,
        http_client: httpx.AsyncClient | None = None,
        metrics: RouterObserver | None = None,
        local_lm: Any | None = None,
    ) -> None:
        """``local_lm``: a handle to the LocalLM deployment, for providers of kind ``local``."""
        self._router = ProviderRouter(
            http_client=http_client,
            local_model=_local_model(local_lm) if local_lm is not None else None,
            observer=metrics or RouterMetrics(),
        )

    def reconfigure(self, user_config: dict) -> None:
        self._router.configure(router_config(user_config))

    def provider_states(self) -> dict[str, ProviderState]:
        states = self._router.provider_states().items()
        return {name: ProviderState.model_validate(asdict(s)) for name, s in states}

    async def stream(self, context: ReplyContext) -> AsyncIterator[dict]:
        """Events: ``{"type": "token", "text"}`` ... then ``{"type": "done", "llm": LLMInfo}``,
        or ``{"type": "error", "message", "llm"}`` when a provider broke mid-reply."""
        async for event in self._router.stream(context):
            yield _api_event(event)

    async def respond(self, context: ReplyContext) -> tuple[str, LLMInfo, str | None]:
        """The whole reply at once: (text, llm info, error message if it broke mid-reply)."""
        text, info, error = await self._router.respond(context)
        return text, LLMInfo.model_validate(asdict(info)), error
