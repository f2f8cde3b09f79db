"""A real SQLite store with keys, and a small FastAPI app behind the security middleware."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from deployments.errors import error_response
from deployments.security.gate import Gate, GateSettings, Refusal
from deployments.security.keys import new_key
from deployments.security.middleware import SecurityMiddleware, principal_of
from store.sqlite_store import SQLiteStore

SETTINGS = GateSettings(max_body_bytes=2048, key_cache_ttl_s=5.0)


@pytest.fixture
def store(tmp_path: Path):
    sqlite = SQLiteStore(tmp_path / "tutor.db")
    yield sqlite
    sqlite.close()


@pytest.fixture
def add_key(store):
    def add(name: str = "web", scopes=("tutor",), **fields) -> str:
        key, record = new_key(name=name, scopes=list(scopes), now=1.0, **fields)
        assert store.add_api_key(record)
        return key

    return add


class App:
    """Routes shaped like the tutor's: they echo what reached them."""

    def __init__(self, gate: Gate | None) -> None:
        self.release = asyncio.Event()
        self.release.set()
        api = FastAPI()

        def refused(refusal: Refusal):
            return error_response(
                refusal.status,
                refusal.message,
                request_id="req-1",
                headers=refusal.headers,
                code=refusal.code,
            )

        api.add_middleware(SecurityMiddleware, respond=refused, gate=lambda: gate)

        @api.post("/v1/tutor")
        async def tutor(request: Request):
            await self.release.wait()
            body = await request.body()
            principal = principal_of(request.scope)
            return {"bytes": len(body), "key": principal.name if principal else None}

        @api.post("/v1/chat/completions")
        async def chat():
            async def events():
                yield "data: first\n\n"
                await self.release.wait()  # the turn is still at work while this waits
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        @api.get("/v1/learners/{learner_id}")
        async def learner(learner_id: str):
            return {"learner_id": learner_id}

        @api.get("/healthz")
        async def healthz():
            return {"status": "ok"}

        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://tutor"
        )


@pytest.fixture
async def app(store):
    served = App(Gate(store, enabled=True, settings=SETTINGS))
    yield served
    await served.client.aclose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
