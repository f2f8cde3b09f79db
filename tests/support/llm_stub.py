"""A loopback OpenAI-compatible server for router tests and benchmarks, with faults injected
per provider.

Each provider is a path prefix: ``{base}/{name}/v1/chat/completions``. ``stub.behave(name, ...)``
sets what that provider does next: answer, 429 with Retry-After, 500, 400, wait before the first
token (slow, or a stall past the client's timeout), stall mid-stream, or drop the connection
mid-stream. Asked for usage (``stream_options.include_usage``), it ends the stream with a usage
chunk, as OpenAI does: one prompt token per word of the messages, one reply token per word.
Every request is recorded (provider, headers, body).

``python -m tests.support.llm_stub --port P`` serves it in a process of its own, every provider
answering at a fixed pace (``make bench`` measures streaming through the tutor against it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.serve_process import free_port


@dataclass
class Behaviour:
    mode: str = "ok"  # ok | rate_limit | error (500) | reject (400) | drop | stall_mid
    text: str = "Hello from the stub."
    retry_after: int = 30
    delay_s: float = 0.0  # before the first token, or after the second one with stall_mid
    times: int | None = None  # the fault happens this many times, then the provider answers
    token_interval_s: float = 0.0  # between streamed words


@dataclass
class StubServer:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    default: Behaviour = field(default_factory=Behaviour)  # of providers given no behaviour
    record: bool = True
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
        if stub.record:
            stub.requests.append(
                {"provider": provider, "headers": dict(request.headers), "body": body}
            )
        behaviour = stub.behaviours.get(provider, stub.default)
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
        if behaviour.mode == "reject":
            return JSONResponse({"error": "unsupported option"}, status_code=400)

        async def events():
            if behaviour.mode != "stall_mid":
                await asyncio.sleep(behaviour.delay_s)
            words = behaviour.text.split(" ")
            for i, word in enumerate(words):
                if i and behaviour.token_interval_s:
                    await asyncio.sleep(behaviour.token_interval_s)
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


class RunningStub:
    """Starts the stub on a free loopback port in a thread; ``stop()`` shuts it down."""

    def __init__(self) -> None:
        self.stub = StubServer()
        port = free_port()
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


@contextlib.contextmanager
def stub_process(*, first_token_s: float, token_interval_s: float, words: int) -> Iterator[str]:
    """The stub in a process of its own (not sharing the GIL with a load generator); yields its
    base URL, under which any ``/{provider}/v1`` answers at the given pace."""
    port = free_port()
    command = [sys.executable, "-m", "tests.support.llm_stub", "--port", str(port)]
    command += ["--first-token-s", str(first_token_s), "--token-interval-s", str(token_interval_s)]
    command += ["--words", str(words)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the stub server process did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the stub; every provider at one pace.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-s", type=float, default=0.1)
    parser.add_argument("--token-interval-s", type=float, default=0.01)
    parser.add_argument("--words", type=int, default=30)
    args = parser.parse_args(argv)
    text = " ".join(f"word{i}" for i in range(args.words))
    stub = StubServer(
        default=Behaviour(
            text=text, delay_s=args.first_token_s, token_interval_s=args.token_interval_s
        )
    )
    uvicorn.run(_app(stub), host="127.0.0.1", port=args.port, log_level="error")


if __name__ == "__main__":
    main()
