"""A minimal async client for OpenAI-compatible chat completion endpoints (streaming).

Groq, Gemini's OpenAI endpoint, OpenAI, vLLM and Ollama all accept this wire format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx


class ProviderError(RuntimeError):
    """A provider answered with an error, or not at all, before or during the stream.

    ``outcome`` names the failure for attempts and metrics: ``rate_limited`` (429), ``error``
    (another HTTP error, a malformed stream, a dropped connection) or ``timeout``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        outcome: str = "error",
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.outcome = outcome


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def stream_chat(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    model: str,
    messages: list[dict[str, str]],
    api_key: str | None,
    timeout_s: float,
    max_tokens: int,
    temperature: float,
) -> AsyncIterator[str]:
    """Yield the reply's text pieces as the provider streams them."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    url = base_url.rstrip("/") + "/chat/completions"
    try:
        async with client.stream(
            "POST", url, json=body, headers=headers, timeout=httpx.Timeout(timeout_s)
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise ProviderError(
                    f"HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after=_retry_after(response),
                    outcome="rate_limited" if response.status_code == 429 else "error",
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                    delta = chunk["choices"][0].get("delta") or {}
                except (json.JSONDecodeError, KeyError, IndexError) as exc:
                    raise ProviderError(f"malformed stream chunk: {exc}") from exc
                text = delta.get("content")
                if text:
                    yield text
    except httpx.TimeoutException as exc:
        raise ProviderError(f"timeout after {timeout_s}s", outcome="timeout") from exc
    except httpx.HTTPError as exc:
        # Never include the request (and so the Authorization header) in the message.
        raise ProviderError(f"{type(exc).__name__}") from exc
