"""The emotion model as every peer server loads and answers with it.

Imported inside the peers' own venvs (PYTHONPATH=<repo>): only models.emotion and its
dependencies, never Ray or the deployments package. Settings come from the environment the
harness starts the server with:
- PEER_ARTIFACT: the artifact folder (the served emotion version of serve_config.yaml);
- PEER_BACKEND: passed to EmotionClassifier.from_artifact as ``backend`` only when set;
- PEER_THREADS: torch threads (and ``threads`` for a non-default backend); unset: whatever the
  server's process was given (for BentoML, what it sets by default).
"""

from __future__ import annotations

import os

from models.emotion.classifier import EmotionClassifier, EmotionPrediction


def load_classifier() -> EmotionClassifier:
    import torch

    threads = os.environ.get("PEER_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    kwargs: dict = {}
    backend = os.environ.get("PEER_BACKEND")
    if backend:
        kwargs["backend"] = backend
        if threads:
            kwargs["threads"] = int(threads)
    classifier = EmotionClassifier.from_artifact(os.environ["PEER_ARTIFACT"], **kwargs)
    classifier.predict(["warm up the encoder once before the first request"])
    return classifier


def result(prediction: EmotionPrediction) -> dict:
    """One text's answer, shaped as /v1/emotion's EmotionResult."""
    return {
        "state": prediction.state,
        "confidence": prediction.confidence,
        "states": prediction.states,
        "goemotions": {"scores": prediction.scores, "predicted": prediction.predicted},
    }


def info() -> dict:
    """What the harness records about the server process's threading."""
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "backend": os.environ.get("PEER_BACKEND") or "the version's own (default)",
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PEER_THREADS")
            if k in os.environ
        },
    }
