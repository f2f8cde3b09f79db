"""Where one learner's tutor turn spends its time (`make bench`, one client, offline responder).

Each stage as the Ingress timed it (the response's ``timings_ms``: the call to the replica and
back, with whatever else the Ingress did meanwhile) beside what the stage's own work costs
in-process in the same run. The difference is what serving the stage as a deployment adds:
the hop (serialization, gRPC, the replica's request handling) and, for the stages that run at
the same time (emotion beside the history load and difficulty), sharing the cores.
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from benchmarks.difficulty import percentiles
from models.common.vocab import STRATEGIES
from models.llm.offline import offline_reply
from models.llm.prompts import ReplyContext
from models.personalization.bandit import LinearThompsonSampling
from models.personalization.context import CONTEXT_DIM

MODEL_STAGES = ("emotion", "difficulty", "personalization", "reply")


def served_stages(base_url: str, turns: int, make_request) -> dict:
    """Percentiles of the client's whole request and of every stage the Ingress reports, over
    ``turns`` sequential turns of one learner."""
    client_ms: list[float] = []
    stages: dict[str, list[float]] = {}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(turns):
            method, path, body = make_request(0, i)
            started = time.perf_counter()
            response = http.request(method, path, json=body)
            client_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            for stage, ms in response.json()["timings_ms"].items():
                stages.setdefault(stage, []).append(ms)
    return {
        "turns": turns,
        "client": percentiles(client_ms),
        "stages": {stage: percentiles(samples) for stage, samples in stages.items()},
    }


def small_stages_in_process(samples: int = 500) -> dict:
    """The personalization choice (a Thompson draw over every strategy, with its propensity)
    and the offline reply, in-process: the work behind two of the turn's hops."""
    bandit = LinearThompsonSampling(STRATEGIES, CONTEXT_DIM)
    rng = np.random.default_rng(0)
    contexts = rng.random((samples, CONTEXT_DIM))
    choose = []
    for context in contexts:
        started = time.perf_counter()
        bandit.choose(context, rng)
        choose.append((time.perf_counter() - started) * 1000)
    reply = []
    for i in range(samples):
        context = ReplyContext(message="why is it 12?", strategy=STRATEGIES[i % len(STRATEGIES)],
                               emotion_state="confused")  # fmt: skip
        started = time.perf_counter()
        offline_reply(context)
        reply.append((time.perf_counter() - started) * 1000)
    return {"personalization": percentiles(choose), "reply": percentiles(reply)}


def stage_overheads(stages: dict, in_process: dict) -> dict[str, float]:
    """Per model stage with an in-process figure: the Ingress's p50 minus the work's p50 (ms)."""
    return {
        stage: round(stages["stages"][stage]["p50_ms"] - in_process[stage]["p50_ms"], 2)
        for stage in MODEL_STAGES
        if stage in stages["stages"] and stage in in_process
    }
