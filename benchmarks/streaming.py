"""Streaming latency: time to the first token and to the end of the stream, per request.

Closed loop like ``benchmarks/load.py``, but each client reads its response line by line to
see when the first token arrives, which wrk cannot. The same client measures the provider stub
directly (OpenAI chunks) and the tutor (SSE ``event: token``), so the two compare in one run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import numpy as np

RequestMaker = Callable[[int, int], tuple[str, dict]]  # (client, i) -> (path, json body)
FirstToken = Callable[[str], bool]  # is this line of the stream the first token's?


def tutor_token(line: str) -> bool:
    return line == "event: token"


def openai_token(line: str) -> bool:
    return line.startswith("data:") and '"content"' in line


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(samples_ms, 50)), 1),
        "p99_ms": round(float(np.percentile(samples_ms, 99)), 1),
    }


async def _timed_streams(
    base_url: str, clients: int, seconds: float, make_request: RequestMaker, is_token: FirstToken
) -> dict:
    first_token_ms: list[float] = []
    total_ms: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        deadline = time.perf_counter() + seconds

        async def one_client(index: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < deadline:
                path, body = make_request(index, i)
                i += 1
                started, first = time.perf_counter(), None
                async with http.stream("POST", path, json=body) as response:
                    if response.status_code != 200:
                        errors += 1
                        await response.aread()
                        continue
                    async for line in response.aiter_lines():
                        if first is None and is_token(line):
                            first = time.perf_counter()
                if first is None:
                    errors += 1
                    continue
                first_token_ms.append((first - started) * 1000)
                total_ms.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    if not total_ms:
        raise RuntimeError(f"no stream with a token from {base_url} ({errors} errors)")
    return {
        "clients": clients,
        "streams": len(total_ms),
        "streams_per_s": round(len(total_ms) / elapsed, 1),
        "errors": errors,
        "first_token": _percentiles(first_token_ms),
        "total": _percentiles(total_ms),
    }


def timed_streams(
    base_url: str, clients: int, seconds: float, make_request: RequestMaker, is_token: FirstToken
) -> dict:
    return asyncio.run(_timed_streams(base_url, clients, seconds, make_request, is_token))
