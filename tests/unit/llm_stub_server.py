"""A loopback OpenAI-compatible server for router tests, with faults injected per provider.

Each provider is a path prefix: ``{base}/{name}/v1/chat/completions``. ``stub.behave(name, ...)``
sets what that provider does next: answer, 429 with Retry-After, 500, wait before the first
token (slow, or a stall past the client's timeout), stall mid-stream, or drop the connection
mid-stream. Asked for usage (``stream_options.include_usage``), it ends the stream with a usage
chunk, as OpenAI does: one prompt token per word of the messages, one reply token per word.
Every request is recorded (provider, headers, body).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class Behaviour:
    mode: str = "ok"  # ok | rate_limit | error | drop | stall_mid
    text: str = "Hello from the stub."
    retry_after: int = 30
    delay_s: float = 0.0  # before the first token, or after the second one with stall_mid
    times: int | None = None  # the fault happens this many times, then the provider answers


@dataclass
class StubServer:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    base_url: str = ""

    def behave(self, provider: str, mode: str = "ok", **options) -> None:
        self.behaviours[provider] = Behaviour(mode=mode, **options)

    def calls(self, provider: str) -> int:
        return sum(r["provider"] == provider for r in self.requests)

    def url(self, provider: str) -> str:
        return f"{self.base_url}/{provider}/v1"


def _chunk(text: str) -> str:
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return f"data: {json.dumps(body)}\n\n"


def _usage_chunk(messages: list[dict], words: list[str]) -> str:
    prompt = sum(len(m["content"].split()) for m in messages)
    usage = {"prompt_tokens": prompt, "completion_tokens": len(words)}
    body = {"object": "chat.completion.chunk", "choices": [], "usage": usage}
    return f"data: {json.dumps(body)}\n\n"


def _app(stub: StubServer) -> FastAPI:
    app = FastAPI()

    @app.post("/{provider}/v1/chat/completions")
    async def complete(provider: str, request: Request):
        body = await request.json()
        stub.requests.append({"provider": provider, "headers": dict(request.headers), "body": body})
        behaviour = stub.behaviours.get(provider, Behaviour())
        if behaviour.times is not None:
            if behaviour.times == 0:
                behaviour = Behaviour(text=behaviour.text)
            else:
                behaviour.times -= 1
        if behaviour.mode == "rate_limit":
            headers = {"Retry-After": str(behaviour.retry_after)}
            return JSONResponse({"error": "slow down"}, status_code=429, headers=headers)
        if behaviour.mode == "error":
            return JSONResponse({"error": "internal"}, status_code=500)

        async def events():
            if behaviour.mode != "stall_mid":
                await asyncio.sleep(behaviour.delay_s)
            words = behaviour.text.split(" ")
            for i, word in enumerate(words):
                yield _chunk(word if i == len(words) - 1 else word + " ")
                if behaviour.mode == "drop" and i == 1:
                    raise ConnectionResetError("stub drops the connection mid-stream")
                if behaviour.mode == "stall_mid" and i == 1:
                    await asyncio.sleep(behaviour.delay_s)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _usage_chunk(body["messages"], words)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningStub:
    """Starts the stub on a free loopback port in a thread; ``stop()`` shuts it down."""

    def __init__(self) -> None:
        self.stub = StubServer()
        port = _free_port()
        self.stub.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(_app(self.stub), host="127.0.0.1", port=port, log_level="error")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the stub server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
