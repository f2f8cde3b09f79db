"""LLM router deployment: tries the configured providers in order, then the offline responder.

Fallback only happens before the first token has been sent; a provider that fails mid-stream
ends the stream with an error event rather than mixing two providers' text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator

import httpx

from deployments.config import ProviderConfig, RouterUserConfig
from deployments.schemas import LLMInfo, ProviderAttempt
from models.llm.offline import OFFLINE_MODEL, OFFLINE_PROVIDER, offline_tokens
from models.llm.openai_client import ProviderError, stream_chat
from models.llm.prompts import ReplyContext, chat_messages

logger = logging.getLogger("ray.serve")


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class LLMRouterDeployment:
    def __init__(self, *, http_client: httpx.AsyncClient | None = None) -> None:
        self._client = http_client or httpx.AsyncClient()
        self._config = RouterUserConfig()

    def reconfigure(self, user_config: dict) -> None:
        self._config = RouterUserConfig.model_validate(user_config)
        logger.info("router providers: %s", [p.name for p in self._config.providers])

    def providers(self) -> list[str]:
        return [p.name for p in self._config.providers] + [OFFLINE_PROVIDER]

    async def stream(self, context: ReplyContext) -> AsyncIterator[dict]:
        """Events: ``{"type": "token", "text"}`` ... then ``{"type": "done", "llm": LLMInfo}``."""
        attempts: list[ProviderAttempt] = []
        messages = chat_messages(context, memory_turns=self._config.memory_turns)
        for provider in self._config.providers:
            api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
            if provider.api_key_env and not api_key:
                attempts.append(
                    ProviderAttempt(
                        provider=provider.name,
                        outcome="not_configured",
                        latency_ms=0.0,
                        detail=f"environment variable {provider.api_key_env} is not set",
                    )
                )
                continue
            started = time.perf_counter()
            sent_any = False
            try:
                async for text in self._provider_stream(provider, messages, api_key):
                    sent_any = True
                    yield {"type": "token", "text": text}
            except ProviderError as exc:
                attempts.append(
                    ProviderAttempt(
                        provider=provider.name,
                        outcome="error",
                        latency_ms=_ms_since(started),
                        detail=str(exc),
                    )
                )
                logger.warning("provider %s failed: %s", provider.name, exc)
                if sent_any:
                    info = LLMInfo(provider=provider.name, model=provider.model, attempts=attempts)
                    yield {
                        "type": "error",
                        "message": f"{provider.name} failed mid-reply",
                        "llm": info,
                    }
                    return
                continue
            attempts.append(
                ProviderAttempt(provider=provider.name, outcome="ok", latency_ms=_ms_since(started))
            )
            yield {
                "type": "done",
                "llm": LLMInfo(provider=provider.name, model=provider.model, attempts=attempts),
            }
            return
        started = time.perf_counter()
        for token in offline_tokens(context):
            yield {"type": "token", "text": token}
        attempts.append(
            ProviderAttempt(provider=OFFLINE_PROVIDER, outcome="ok", latency_ms=_ms_since(started))
        )
        yield {
            "type": "done",
            "llm": LLMInfo(provider=OFFLINE_PROVIDER, model=OFFLINE_MODEL, attempts=attempts),
        }

    async def _provider_stream(
        self, provider: ProviderConfig, messages: list[dict[str, str]], api_key: str | None
    ) -> AsyncIterator[str]:
        async for text in stream_chat(
            self._client,
            base_url=provider.base_url,
            model=provider.model,
            messages=messages,
            api_key=api_key,
            timeout_s=provider.timeout_s,
            max_tokens=provider.max_tokens,
            temperature=provider.temperature,
        ):
            yield text

    async def respond(self, context: ReplyContext) -> tuple[str, LLMInfo, str | None]:
        """The whole reply at once: (text, llm info, error message if it broke mid-reply)."""
        pieces: list[str] = []
        async for event in self.stream(context):
            if event["type"] == "token":
                pieces.append(event["text"])
            elif event["type"] == "done":
                return "".join(pieces), event["llm"], None
            else:
                return "".join(pieces), event["llm"], event["message"]
        raise RuntimeError("router stream ended without a closing event")
