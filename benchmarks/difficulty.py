"""Difficulty in-process: 20 candidates for a learner with a 200-step history, per version.

    python -m benchmarks.difficulty [--versions v1 v2 v3] [--threads 1]
        [--out benchmarks/results/difficulty.json]

Two figures per version, each over 100 different learners: a **fresh** request (nothing
cached: the whole window encoded, or the learner's feature counts built from every row) and the
**next turn** after one new answer (the cached window or counts extended by that answer, which
is what a served learner's next turn costs), and the next turn of a learner past the 1,000
stored answers a turn reads (the history the Ingress sends beside the plain newest 1,000 rows).
Versions run one after another in one process, so
their ratios are the comparable figures. ``make bench`` runs the same function for the served
version and the DKT baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from deployments.schemas import MAX_HISTORY
from deployments.tutoring.history import history_window
from models.common.registry import ModelRegistry
from models.difficulty.loader import load_tracer
from models.difficulty.tracer_api import Interaction

# Past the 1,000 stored answers a turn reads, away from a 200-row window's moves (every 100).
PAST_LIMIT_ROWS = 1650
SKILLS = ("9", "15", "7", "34", "68")  # real assist2009_pid skill ids (in every shipped vocab)


def learner_history(rng: np.random.Generator, rows: int) -> list[Interaction]:
    """Attempts at real assist2009_pid items and skills (ids in the shipped vocabulary)."""
    return [
        Interaction(str(1000 + int(rng.integers(0, 3000))), SKILLS[i % 5], bool(rng.random() < 0.7))
        for i in range(rows)
    ]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(samples_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(samples_ms, 99)), 3),
        "n": len(samples_ms),
    }


def _timed_ms(call) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def bench_difficulty_in_process(
    version: str, threads: int, history_len: int = 200, learners: int = 100
) -> dict:
    """P(correct) of 20 candidates for a learner with a ``history_len``-step history: a fresh
    request (nothing cached) and the next turn after one new answer (the cache extended), each
    over ``learners`` different learners; feature computation is inside the timed call."""
    torch.set_num_threads(threads)
    path = ModelRegistry().load("difficulty", version).path
    rng = np.random.default_rng(0)
    histories = [learner_history(rng, history_len) for _ in range(learners)]
    candidates = [(str(2000 + i), SKILLS[i % 5]) for i in range(20)]
    fresh = load_tracer(path, encoding_cache_size=0)
    cached = load_tracer(path, encoding_cache_size=learners)
    fresh.predict(histories[0], candidates)  # warm-up
    fresh_ms, next_turn_ms = [], []
    for history in histories:
        fresh_ms.append(_timed_ms(lambda h=history: fresh.predict(h, candidates)))
        cached.predict(history[:-1], candidates)  # the turn before: fills the cache
        next_turn_ms.append(_timed_ms(lambda h=history: cached.predict(h, candidates)))
    next_turn = percentiles(next_turn_ms)
    fresh_stats = percentiles(fresh_ms)
    past_limit = _past_limit(cached, rng, candidates, learners)
    return {
        "version": version,
        "architecture": fresh.architecture,
        "history_steps": history_len,
        "candidates": len(candidates),
        "fresh": fresh_stats,
        "next_turn": next_turn,
        "next_turn_speedup_p50": round(fresh_stats["p50_ms"] / next_turn["p50_ms"], 2),
        "past_limit": past_limit,
    }


def _past_limit(tracer, rng: np.random.Generator, candidates, learners: int) -> dict:
    """The next turn of learners past the stored limit (``PAST_LIMIT_ROWS`` answers), with the
    history a turn sends (``history_window``: the start moves every 500 answers) beside the
    plain newest ``MAX_HISTORY`` rows, which shift by one row every turn."""
    histories = [learner_history(rng, PAST_LIMIT_ROWS) for _ in range(learners)]

    def next_turn(sent) -> dict:
        samples = []
        for history in histories:
            tracer.predict(sent(history[:-1]), candidates)  # the turn before
            samples.append(_timed_ms(lambda h=history: tracer.predict(sent(h), candidates)))
        return percentiles(samples)

    windowed = next_turn(lambda rows: history_window(rows[-MAX_HISTORY:], len(rows)))
    newest = next_turn(lambda rows: rows[-MAX_HISTORY:])
    return {
        "answers": PAST_LIMIT_ROWS,
        "windowed": windowed,
        "newest_rows": newest,
        "windowed_speedup_p50": round(newest["p50_ms"] / windowed["p50_ms"], 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", nargs="+", default=["v1", "v2", "v3"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the replicas')")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/difficulty.json"))
    args = parser.parse_args(argv)
    runs = [bench_difficulty_in_process(v, args.threads) for v in args.versions]
    for r in runs:
        print(
            f"{r['version']} ({r['architecture']}): fresh p50 {r['fresh']['p50_ms']} ms "
            f"p99 {r['fresh']['p99_ms']} ms | next turn p50 {r['next_turn']['p50_ms']} ms "
            f"p99 {r['next_turn']['p99_ms']} ms | past {r['past_limit']['answers']} answers: "
            f"next turn p50 {r['past_limit']['windowed']['p50_ms']} ms "
            f"({r['past_limit']['windowed_speedup_p50']}x the newest rows')"
        )
    results = {
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "load_1min": round(os.getloadavg()[0], 2),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
