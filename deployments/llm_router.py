"""LLM router deployment: ranks the providers per turn, calls them until one answers, then the
offline responder.

- Order: ``models/llm/routing.py`` scores each provider from the turn (strategy, emotion,
  difficulty), the client's ``priority``/``max_latency_ms`` and this replica's observed health.
- A circuit breaker per provider (``models/llm/circuit_breaker.py``) skips one that keeps
  failing and lets one probe through after the cooldown or its ``Retry-After``.
- At most ``max_attempts`` providers are called per turn. Fallback happens only before the first
  token: a provider that fails mid-stream ends the stream with an error event rather than
  mixing two providers' text.

Health and breakers are per replica: each replica learns about a provider from its own calls,
which is enough to stop hammering a failing provider and needs no shared state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from deployments.config import ProviderConfig, RouterUserConfig, router_config
from deployments.schemas import LLMInfo, ProviderAttempt
from deployments.telemetry import RouterMetrics
from models.llm.circuit_breaker import BreakerConfig, CircuitBreaker
from models.llm.offline import OFFLINE_MODEL, OFFLINE_PROVIDER, offline_tokens
from models.llm.openai_client import ProviderError, stream_chat
from models.llm.prompts import ReplyContext, chat_messages
from models.llm.routing import ProviderHealth, ProviderProfile, TurnNeeds, rank_providers

logger = logging.getLogger("ray.serve")


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _needs(context: ReplyContext, messages: list[dict[str, str]]) -> TurnNeeds:
    prompt_chars = sum(len(m["content"]) for m in messages)
    return TurnNeeds(
        priority=context.priority,
        max_latency_ms=context.max_latency_ms,
        strategy=context.strategy,
        emotion_state=context.emotion_state,
        p_correct=context.mastery,
        input_tokens=prompt_chars // 4,  # ~4 characters per token in English
    )


class LLMRouterDeployment:
    def __init__(
        self,
        *,
        http_client: httpx.AsyncClient | None = None,
        metrics: RouterMetrics | None = None,
        local_lm: Any | None = None,
    ) -> None:
        """``local_lm``: a handle to the LocalLM deployment, for providers of kind ``local``."""
        self._client = http_client or httpx.AsyncClient()
        self._local_lm = local_lm
        self._metrics = metrics or RouterMetrics()
        self._config = RouterUserConfig()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._health: dict[str, ProviderHealth] = {}
        self._profiles: list[ProviderProfile] = []

    def reconfigure(self, user_config: dict) -> None:
        self._config = router_config(user_config)
        breaker = BreakerConfig(
            failure_threshold=self._config.breaker_failure_threshold,
            cooldown_s=self._config.breaker_cooldown_s,
        )
        names = [p.name for p in self._config.providers]
        # A provider kept across a reconfigure keeps its health; its breaker takes new settings.
        self._health = {n: self._health.get(n, ProviderHealth()) for n in names}
        self._breakers = {n: CircuitBreaker(breaker) for n in names}
        self._profiles = [
            ProviderProfile(
                name=p.name,
                tags=frozenset(p.tags),
                cost_per_1k_input=p.cost_per_1k_input,
                cost_per_1k_output=p.cost_per_1k_output,
                priority=p.priority,
            )
            for p in self._config.providers
        ]
        logger.info("router providers: %s", names)

    def providers(self) -> list[str]:
        return [p.name for p in self._config.providers] + [OFFLINE_PROVIDER]

    def provider_states(self) -> dict[str, dict]:
        """Per provider: breaker state and observed health (for /healthz and debugging)."""
        now = time.monotonic()
        return {
            name: {
                "breaker": self._breakers[name].state(now).value,
                "ttft_ms": self._health[name].ttft_ms,
                "error_rate": round(self._health[name].error_rate, 4),
            }
            for name in self._breakers
        }

    def _ranked(self, needs: TurnNeeds) -> list[ProviderConfig]:
        by_name = {p.name: p for p in self._config.providers}
        return [by_name[r.name] for r in rank_providers(self._profiles, self._health, needs)]

    async def stream(self, context: ReplyContext) -> AsyncIterator[dict]:
        """Events: ``{"type": "token", "text"}`` ... then ``{"type": "done", "llm": LLMInfo}``,
        or ``{"type": "error", "message", "llm"}`` when a provider broke mid-reply."""
        attempts: list[ProviderAttempt] = []
        messages = chat_messages(context, memory_turns=self._config.memory_turns)
        needs = _needs(context, messages)
        called = 0
        for provider in self._ranked(needs):
            if called >= self._config.max_attempts:
                break
            skipped = self._skip_reason(provider)
            if skipped is not None:
                attempts.append(skipped)
                self._metrics.record_call(provider.name, skipped.outcome)
                continue
            called += 1
            api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
            started = time.perf_counter()
            ttft_ms: float | None = None
            output_chars = 0
            try:
                async for text in self._provider_stream(provider, messages, api_key):
                    ttft_ms = ttft_ms if ttft_ms is not None else _ms_since(started)
                    output_chars += len(text)
                    yield {"type": "token", "text": text}
            except ProviderError as exc:
                self._health[provider.name].record(ok=False, ttft_ms=ttft_ms)
                self._breakers[provider.name].record_failure(time.monotonic(), exc.retry_after)
                self._record_call(provider, exc.outcome, ttft_ms, needs, output_chars)
                attempts.append(
                    ProviderAttempt(
                        provider=provider.name,
                        outcome=exc.outcome,
                        latency_ms=_ms_since(started),
                        detail=str(exc),
                    )
                )
                logger.warning("provider %s failed: %s", provider.name, exc)
                if ttft_ms is not None:  # text was sent: no fallback, never mixed replies
                    info = LLMInfo(provider=provider.name, model=provider.model, attempts=attempts)
                    message = f"{provider.name} failed mid-reply"
                    yield {"type": "error", "message": message, "llm": info}
                    return
                continue
            except BaseException:
                # The client went away (cancelled): neither a success nor the provider's fault.
                self._breakers[provider.name].release_probe()
                raise
            self._breakers[provider.name].record_success()
            self._health[provider.name].record(ok=True, ttft_ms=ttft_ms)
            self._record_call(provider, "ok", ttft_ms, needs, output_chars)
            attempts.append(
                ProviderAttempt(provider=provider.name, outcome="ok", latency_ms=_ms_since(started))
            )
            yield {
                "type": "done",
                "llm": LLMInfo(provider=provider.name, model=provider.model, attempts=attempts),
            }
            return
        async for event in self._offline(context, attempts):
            yield event

    def _skip_reason(self, provider: ProviderConfig) -> ProviderAttempt | None:
        if provider.kind == "local" and self._local_lm is None:
            return ProviderAttempt(
                provider=provider.name,
                outcome="not_configured",
                latency_ms=0.0,
                detail="no LocalLM deployment (the app's local_llm_path is not set)",
            )
        if provider.api_key_env and not os.environ.get(provider.api_key_env):
            return ProviderAttempt(
                provider=provider.name,
                outcome="not_configured",
                latency_ms=0.0,
                detail=f"environment variable {provider.api_key_env} is not set",
            )
        breaker = self._breakers[provider.name]
        now = time.monotonic()
        if not breaker.allow(now):
            return ProviderAttempt(
                provider=provider.name,
                outcome="circuit_open",
                latency_ms=0.0,
                detail=f"retry in {breaker.retry_in(now):.1f}s",
            )
        return None

    def _record_call(
        self,
        provider: ProviderConfig,
        outcome: str,
        ttft_ms: float | None,
        needs: TurnNeeds,
        output_chars: int,
    ) -> None:
        output_tokens = output_chars // 4
        cost = (
            needs.input_tokens / 1000 * provider.cost_per_1k_input
            + output_tokens / 1000 * provider.cost_per_1k_output
        )
        self._metrics.record_call(
            provider.name,
            outcome,
            ttft_ms=ttft_ms,
            input_tokens=needs.input_tokens,
            output_tokens=output_tokens,
            cost=cost,
        )
        state = self._breakers[provider.name].state(time.monotonic())
        self._metrics.record_breaker(provider.name, state.value)

    async def _offline(self, context: ReplyContext, attempts: list[ProviderAttempt]):
        started = time.perf_counter()
        for token in offline_tokens(context):
            yield {"type": "token", "text": token}
        attempts.append(
            ProviderAttempt(provider=OFFLINE_PROVIDER, outcome="ok", latency_ms=_ms_since(started))
        )
        self._metrics.record_call(OFFLINE_PROVIDER, "ok")
        yield {
            "type": "done",
            "llm": LLMInfo(provider=OFFLINE_PROVIDER, model=OFFLINE_MODEL, attempts=attempts),
        }

    async def _provider_stream(
        self, provider: ProviderConfig, messages: list[dict[str, str]], api_key: str | None
    ) -> AsyncIterator[str]:
        if provider.kind == "local":
            async for text in self._local_stream(provider, messages):
                yield text
            return
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

    async def _local_stream(
        self, provider: ProviderConfig, messages: list[dict[str, str]]
    ) -> AsyncIterator[str]:
        """The LocalLM deployment's pieces, with the same timeout and errors as HTTP providers."""
        pieces = self._local_lm.options(stream=True).stream.remote(
            messages, provider.max_tokens, provider.temperature
        )
        iterator = pieces.__aiter__()
        while True:
            try:
                text = await asyncio.wait_for(iterator.__anext__(), timeout=provider.timeout_s)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                message = f"timeout after {provider.timeout_s}s"
                raise ProviderError(message, outcome="timeout") from exc
            except Exception as exc:  # the replica died or the model raised
                raise ProviderError(f"local model failed: {type(exc).__name__}") from exc
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
