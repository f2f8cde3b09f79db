"""The LLM router: ranks the providers per turn, calls them until one answers, then the offline
responder. Plain async Python (no Ray): the LLMRouter deployment wraps one per replica.

- Order: ``models.llm.routing`` scores each provider from the turn (strategy, emotion,
  difficulty), the client's ``priority``/``max_latency_ms`` and this router's observed health.
- A circuit breaker per provider (``models.llm.circuit_breaker``) skips one that keeps failing
  and lets one probe through after the cooldown or its ``Retry-After``.
- Fallback to the next provider, then one retry of each that failed transiently, at most
  ``max_attempts`` calls per turn. Both happen only before the first token: a provider that
  fails mid-stream ends the stream with an error event rather than mixing two replies.

Health and breakers belong to one router (one replica): it learns about a provider from its
own calls, which is enough to stop hammering a failing provider and needs no shared state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

from models.llm.circuit_breaker import BreakerConfig, CircuitBreaker
from models.llm.config import ProviderConfig, RouterConfig
from models.llm.offline import OFFLINE_MODEL, OFFLINE_PROVIDER, offline_tokens
from models.llm.openai_client import ProviderError, TokenUsage, stream_chat
from models.llm.prompts import ReplyContext, chat_messages
from models.llm.routing import (
    CHARS_PER_TOKEN,
    ProviderHealth,
    ProviderProfile,
    TurnNeeds,
    rank_providers,
)

# The logger whose lines Serve writes to the replica's log file, with the request id (a name,
# not an import of Ray: outside Serve it is a plain logger).
logger = logging.getLogger("ray.serve")

# messages, max_tokens, temperature -> the local model's text pieces (the LocalLM deployment)
LocalModel = Callable[[list[dict[str, str]], int, float], AsyncIterator[str]]


@dataclass(frozen=True)
class Attempt:
    """One provider considered for a turn: called, or skipped and why."""

    provider: str
    outcome: str  # ok, error, rejected, rate_limited, timeout, circuit_open, not_configured
    latency_ms: float
    detail: str | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    counted_by: Literal["provider", "estimate"]
    cost: float


@dataclass(frozen=True)
class RouteInfo:
    """Who answered the turn, everything tried on the way, and what the answer cost."""

    provider: str
    model: str
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage | None = None


@dataclass(frozen=True)
class ProviderStatus:
    """A provider as this router sees it (``/healthz``)."""

    configured: bool
    breaker: str
    retry_in_s: float
    ttft_ms: float | None
    error_rate: float
    requests: int


class RouterObserver(Protocol):
    """Where the router reports each call (the deployment's Prometheus metrics)."""

    def record_call(
        self, provider: str, outcome: str, *, ttft_ms: float | None = None, usage: Usage | None
    ) -> None: ...

    def record_breaker(self, provider: str, state: str) -> None: ...


class _NoObserver:
    def record_call(self, provider, outcome, *, ttft_ms=None, usage=None) -> None:
        pass

    def record_breaker(self, provider, state) -> None:
        pass


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


@dataclass
class _Call:
    """What one provider call has produced so far."""

    started: float
    ttft_ms: float | None = None
    output_chars: int = 0
    reported: TokenUsage | None = None

    def saw_text(self, text: str) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = _ms_since(self.started)
        self.output_chars += len(text)

    def usage(self, provider: ProviderConfig, *, estimated_input_tokens: int) -> Usage | None:
        """The provider's token count when it reported one, else an estimate; priced. None for
        a call that failed before any text (not billed, as a rule)."""
        if self.reported is None and self.ttft_ms is None:
            return None
        if self.reported is not None:
            tokens = (self.reported.input_tokens, self.reported.output_tokens)
        else:
            tokens = (estimated_input_tokens, self.output_chars // CHARS_PER_TOKEN)
        cost = (
            tokens[0] / 1000 * provider.cost_per_1k_input
            + tokens[1] / 1000 * provider.cost_per_1k_output
        )
        return Usage(
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            counted_by="provider" if self.reported is not None else "estimate",
            cost=round(cost, 8),
        )


def _needs(context: ReplyContext, messages: list[dict[str, str]]) -> TurnNeeds:
    prompt_chars = sum(len(m["content"]) for m in messages)
    return TurnNeeds(
        priority=context.priority,
        max_latency_ms=context.max_latency_ms,
        strategy=context.strategy,
        emotion_state=context.emotion_state,
        p_correct=context.mastery,
        input_tokens=prompt_chars // CHARS_PER_TOKEN,
    )


class ProviderRouter:
    def __init__(
        self,
        config: RouterConfig | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        local_model: LocalModel | None = None,
        observer: RouterObserver | None = None,
    ) -> None:
        """``local_model``: streams the local causal LM, for providers of kind ``local``."""
        self._client = http_client or httpx.AsyncClient()
        self._local_model = local_model
        self._observer = observer or _NoObserver()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._health: dict[str, ProviderHealth] = {}
        self.configure(config or RouterConfig())

    def configure(self, config: RouterConfig) -> None:
        self.config = config
        breaker = BreakerConfig(
            failure_threshold=config.breaker_failure_threshold,
            cooldown_s=config.breaker_cooldown_s,
        )
        names = [p.name for p in config.providers]
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
            for p in config.providers
        ]
        logger.info("router providers: %s", names)

    def provider_states(self) -> dict[str, ProviderStatus]:
        """Per provider: whether it can be called, its breaker and observed health."""
        now = time.monotonic()
        states = {}
        for provider in self.config.providers:
            breaker, health = self._breakers[provider.name], self._health[provider.name]
            states[provider.name] = ProviderStatus(
                configured=self._unconfigured_reason(provider) is None,
                breaker=breaker.state(now).value,
                retry_in_s=round(breaker.retry_in(now), 1),
                ttft_ms=None if health.ttft_ms is None else round(health.ttft_ms, 1),
                error_rate=round(health.error_rate, 4),
                requests=health.requests,
            )
        return states

    async def respond(self, context: ReplyContext) -> tuple[str, RouteInfo, str | None]:
        """The whole reply at once: (text, route info, error message if it broke mid-reply)."""
        pieces: list[str] = []
        async for event in self.stream(context):
            if event["type"] == "token":
                pieces.append(event["text"])
            elif event["type"] == "done":
                return "".join(pieces), event["llm"], None
            else:
                return "".join(pieces), event["llm"], event["message"]
        raise RuntimeError("router stream ended without a closing event")

    async def stream(self, context: ReplyContext) -> AsyncIterator[dict]:
        """Events: ``{"type": "token", "text"}`` ... then ``{"type": "done", "llm": RouteInfo}``,
        or ``{"type": "error", "message", "llm"}`` when a provider broke mid-reply."""
        attempts: list[Attempt] = []
        messages = chat_messages(context, memory_turns=self.config.memory_turns)
        needs = _needs(context, messages)
        called = 0
        for provider, is_retry in self._candidates(needs, attempts):
            if called >= self.config.max_attempts:
                break
            if is_retry:
                if not self._breakers[provider.name].allow(time.monotonic()):
                    continue  # its failure is already in attempts; now its breaker is open
                await asyncio.sleep(self.config.retry_backoff_s * random.uniform(0.5, 1.5))
            else:
                skipped = self._skip_reason(provider)
                if skipped is not None:
                    attempts.append(skipped)
                    self._observer.record_call(provider.name, skipped.outcome, usage=None)
                    continue
            called += 1
            call = _Call(started=time.perf_counter())
            try:
                async for piece in self._provider_stream(provider, messages):
                    if isinstance(piece, TokenUsage):
                        call.reported = piece
                        continue
                    call.saw_text(piece)
                    yield {"type": "token", "text": piece}
            except ProviderError as exc:
                self._health[provider.name].record(ok=False, ttft_ms=call.ttft_ms)
                self._breakers[provider.name].record_failure(time.monotonic(), exc.retry_after)
                usage = self._record_call(provider, exc.outcome, call, needs)
                attempts.append(
                    Attempt(provider.name, exc.outcome, _ms_since(call.started), detail=str(exc))
                )
                logger.warning("provider %s failed: %s", provider.name, exc)
                if call.ttft_ms is not None:  # text was sent: no fallback, never mixed replies
                    info = RouteInfo(provider.name, provider.model, attempts, usage)
                    message = f"{provider.name} failed mid-reply"
                    yield {"type": "error", "message": message, "llm": info}
                    return
                continue
            except BaseException:
                # The client went away (cancelled): neither a success nor the provider's fault.
                self._breakers[provider.name].release_probe()
                raise
            self._breakers[provider.name].record_success()
            self._health[provider.name].record(ok=True, ttft_ms=call.ttft_ms)
            usage = self._record_call(provider, "ok", call, needs)
            attempts.append(Attempt(provider.name, "ok", _ms_since(call.started)))
            yield {"type": "done", "llm": RouteInfo(provider.name, provider.model, attempts, usage)}
            return
        async for event in self._offline(context, attempts):
            yield event

    def _candidates(
        self, needs: TurnNeeds, attempts: list[Attempt]
    ) -> Iterator[tuple[ProviderConfig, bool]]:
        """(provider, is_retry): the ranked providers, then once more each that failed with a
        transient ``error`` (a refused connection, a 5xx). Lazy: the retries are chosen from
        ``attempts`` after the first pass. Timeouts are not retried (they already cost
        ``timeout_s``), nor rate limits (their breaker waits for ``Retry-After``)."""
        by_name = {p.name: p for p in self.config.providers}
        ranked = [by_name[r.name] for r in rank_providers(self._profiles, self._health, needs)]
        for provider in ranked:
            yield provider, False
        failed = {a.provider for a in attempts if a.outcome == "error"}
        for provider in ranked:
            if provider.name in failed:
                yield provider, True

    def _unconfigured_reason(self, provider: ProviderConfig) -> str | None:
        if provider.kind == "local" and self._local_model is None:
            return "no LocalLM deployment (the app's local_llm_path is not set)"
        if provider.api_key_env and not os.environ.get(provider.api_key_env):
            return f"environment variable {provider.api_key_env} is not set"
        return None

    def _skip_reason(self, provider: ProviderConfig) -> Attempt | None:
        unconfigured = self._unconfigured_reason(provider)
        if unconfigured is not None:
            return Attempt(provider.name, "not_configured", 0.0, detail=unconfigured)
        breaker = self._breakers[provider.name]
        now = time.monotonic()
        if not breaker.allow(now):
            detail = f"retry in {breaker.retry_in(now):.1f}s"
            return Attempt(provider.name, "circuit_open", 0.0, detail=detail)
        return None

    def _record_call(
        self, provider: ProviderConfig, outcome: str, call: _Call, needs: TurnNeeds
    ) -> Usage | None:
        usage = call.usage(provider, estimated_input_tokens=needs.input_tokens)
        self._observer.record_call(provider.name, outcome, ttft_ms=call.ttft_ms, usage=usage)
        state = self._breakers[provider.name].state(time.monotonic())
        self._observer.record_breaker(provider.name, state.value)
        return usage

    async def _offline(self, context: ReplyContext, attempts: list[Attempt]):
        started = time.perf_counter()
        for token in offline_tokens(context):
            yield {"type": "token", "text": token}
        attempts.append(Attempt(OFFLINE_PROVIDER, "ok", _ms_since(started)))
        self._observer.record_call(OFFLINE_PROVIDER, "ok", usage=None)
        yield {"type": "done", "llm": RouteInfo(OFFLINE_PROVIDER, OFFLINE_MODEL, attempts)}

    async def _provider_stream(
        self, provider: ProviderConfig, messages: list[dict[str, str]]
    ) -> AsyncIterator[str | TokenUsage]:
        if provider.kind == "local":
            async for text in self._local_stream(provider, messages):
                yield text
            return
        api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
        async for text in stream_chat(
            self._client,
            base_url=provider.base_url,
            model=provider.model,
            messages=messages,
            api_key=api_key,
            timeout_s=provider.timeout_s,
            max_tokens=provider.max_tokens,
            temperature=provider.temperature,
            request_usage=provider.request_usage,
        ):
            yield text

    async def _local_stream(
        self, provider: ProviderConfig, messages: list[dict[str, str]]
    ) -> AsyncIterator[str]:
        """The local model's pieces, with the same timeout and errors as HTTP providers."""
        assert self._local_model is not None, "skipped as not_configured without a local model"
        iterator = aiter(self._local_model(messages, provider.max_tokens, provider.temperature))
        while True:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the
                # request's cancellation when a piece arrives in the same step, and the local
                # model would then go on generating for a client that is gone.
                async with asyncio.timeout(provider.timeout_s):
                    text = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                message = f"timeout after {provider.timeout_s}s"
                raise ProviderError(message, outcome="timeout") from exc
            except Exception as exc:  # the replica died or the model raised
                raise ProviderError(f"local model failed: {type(exc).__name__}") from exc
            yield text
