"""A minimal async client for OpenAI-compatible chat completion endpoints (streaming).

Groq, Gemini's OpenAI endpoint, OpenAI, vLLM and Ollama all accept this wire format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class TokenUsage:
    """Tokens the provider says it counted for the call (its own tokenizer, so billable)."""

    input_tokens: int
    output_tokens: int


class ProviderError(RuntimeError):
    """A provider answered with an error, or not at all, before or during the stream.

    ``outcome`` names the failure for attempts and metrics: ``rate_limited`` (429), ``rejected``
    (another 4xx: retrying the same request would not help), ``error`` (a 5xx, a malformed
    stream, a refused or dropped connection) or ``timeout``.
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


def _outcome(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if 400 <= status < 500 and status != 408:
        return "rejected"  # the request itself: a bad key or model, an option it refuses
    return "error"


def _usage(chunk: dict) -> TokenUsage | None:
    # OpenAI, vLLM, Ollama and Gemini put it at the top level; Groq also under ``x_groq``.
    usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
    if not usage:
        return None
    return TokenUsage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def _parse_chunk(data: str) -> tuple[str | None, TokenUsage | None]:
    """(text, usage) of one ``data:`` line; an error object or a malformed chunk raises."""
    try:
        chunk = json.loads(data)
        if "error" in chunk:  # some servers report a failure mid-stream this way
            message = str((chunk["error"] or {}).get("message", ""))[:200]
            raise ProviderError(f"provider error mid-stream: {message}")
        usage = _usage(chunk)
        if "choices" not in chunk and usage is None:
            raise ProviderError("malformed stream chunk: no choices")
        # The usage chunk's choices are empty; a text chunk has one.
        choices = chunk.get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content"), usage
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise ProviderError(f"malformed stream chunk: {exc!r}") from exc


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
    request_usage: bool = True,
) -> AsyncIterator[str | TokenUsage]:
    """Yield the reply's text pieces as the provider streams them, and a ``TokenUsage`` when
    the provider reports one (``request_usage`` asks for it: ``stream_options.include_usage``).
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    if request_usage:
        body["stream_options"] = {"include_usage": True}
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
                    outcome=_outcome(response.status_code),
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                text, usage = _parse_chunk(data)
                if text:
                    yield text
                if usage is not None:
                    yield usage
    except httpx.TimeoutException as exc:
        raise ProviderError(f"timeout after {timeout_s}s", outcome="timeout") from exc
    except httpx.HTTPError as exc:
        # Never include the request (and so the Authorization header) in the message.
        raise ProviderError(f"{type(exc).__name__}") from exc
