"""The naive server a user writes: FastAPI + uvicorn, one process, a `def` endpoint that calls
the classifier for each request's texts. No batching across requests: FastAPI runs a `def`
endpoint in its threadpool, so concurrent requests' forward passes run side by side on torch's
intra-op threads instead of together in one batch.

Run: PEER_ARTIFACT=... python -m uvicorn benchmarks.peers.fastapi_naive:app --port N
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from benchmarks.peers.served_model import info, load_classifier, result

app = FastAPI()
classifier = load_classifier()


class EmotionRequest(BaseModel):
    texts: list[str]


@app.post("/v1/emotion")
def emotion(request: EmotionRequest) -> dict:
    return {"results": [result(p) for p in classifier.predict(request.texts)]}


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok", **info()}
