"""The emotion model served with BentoML 1.4 as its docs show it: a new-style service, one
worker, adaptive batching (requests that arrive together go into one call, up to 32 texts).

Run (from the repo root, in the bentoml venv, PYTHONPATH=<repo>, PEER_ARTIFACT=...):
  bentoml serve benchmarks.peers.bentoml_service:EmotionService --host 127.0.0.1 --port N
POST /v1/emotion {"texts": [...]} answers a JSON list, one EmotionResult-shaped dict per text.
"""

from __future__ import annotations

import bentoml

from benchmarks.peers.served_model import info, load_classifier, result


# workers=1: one process, as the comparison and the project's one Emotion replica.
# BentoML's defaults otherwise: traffic, threads (the harness records what it set) and the
# batcher's max_latency_ms.
@bentoml.service(workers=1)
class EmotionService:
    def __init__(self) -> None:
        self.classifier = load_classifier()

    # batchable: each request's list of texts is concatenated with those of requests waiting
    # beside it (batch_dim 0), up to max_batch_size, and the answers split back per request.
    @bentoml.api(batchable=True, max_batch_size=32, route="/v1/emotion")
    def emotion(self, texts: list[str]) -> list[dict]:
        return [result(p) for p in self.classifier.predict(texts)]

    @bentoml.api(route="/peer-info")
    def peer_info(self) -> dict:
        return info()
