"""What the security middleware costs a request, in process (no Serve, no network).

The same small POST (a 200-byte JSON body) through a FastAPI app bare, behind the middleware
with auth off (the body limit only: `make serve` on one machine), and with auth on (a cached
key lookup, the scope check, the key's moving-window rate limit and its turn slot).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.security_overhead
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request

from deployments.errors import error_response
from deployments.security.gate import Gate, GateSettings, Refusal
from deployments.security.keys import new_key
from deployments.security.middleware import SecurityMiddleware
from store.sqlite_store import SQLiteStore

REQUESTS = 3000
BODY = json.dumps({"learner_id": "ada", "message": "x" * 160}).encode()


def _app(gate: Gate | None) -> FastAPI:
    api = FastAPI()
    if gate is not None:

        def refused(refusal: Refusal):
            return error_response(refusal.status, refusal.message, request_id="bench")

        api.add_middleware(SecurityMiddleware, respond=refused, gate=lambda: gate)

    @api.post("/v1/tutor")
    async def tutor(request: Request):
        return {"bytes": len(await request.body())}

    return api


async def _per_request_us(api: FastAPI, headers: dict[str, str]) -> float:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(200):  # warm up
            await client.post("/v1/tutor", content=BODY, headers=headers)
        started = time.perf_counter()
        for _ in range(REQUESTS):
            response = await client.post("/v1/tutor", content=BODY, headers=headers)
            assert response.status_code == 200, response.text
        return (time.perf_counter() - started) / REQUESTS * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "tutor.db") as store:
        key, record = new_key(name="bench", scopes=["tutor"], now=0.0, rpm=10**9)
        store.add_api_key(record)
        settings = GateSettings()
        variants = {
            "bare app": (_app(None), {}),
            "middleware, auth off": (_app(Gate(store, enabled=False, settings=settings)), {}),
            "middleware, auth on": (
                _app(Gate(store, enabled=True, settings=settings)),
                {"Authorization": f"Bearer {key}"},
            ),
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(3):  # interleaved rounds: a busy neighbour slows every variant alike
            for name, (api, headers) in variants.items():
                results[name].append(await _per_request_us(api, headers))
        base = statistics.median(results["bare app"])
        for name, runs in results.items():
            median = statistics.median(runs)
            print(f"{name:22s} {median:7.1f} us/request  (+{median - base:5.1f} us)")


if __name__ == "__main__":
    asyncio.run(main())
