"""`make bench`: the served graph against its in-process baselines, measured in one run.

Figures (all on this machine, in this run):
- emotion: raw in-process throughput at batch 32 on the replicas' runtime (the limit) vs
  `/v1/emotion` at 32 concurrent clients sending one text each. Also single-text latency.
- tutor turn: latency p50/p99 and throughput at 1 and 16 concurrent clients; at 1 client, each
  stage as the Ingress timed it beside its work in-process (turn_stages.py).
- difficulty: 20 candidates for a learner with a 200-step history, in-process, fresh and on the
  next turn (the encoding cache extended), the served version and the DKT v1 baseline.
- shadow: `/v1/tutor` at 1 client without and with shadows on every model (shadow_cost.py).
- streaming: a second app whose only provider is a loopback stub at a fixed pace; time to first
  token and to the end through `/v1/tutor` (SSE) against the stub direct, at 1 and 8 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import torch
import yaml

from benchmarks.difficulty import bench_difficulty_in_process, percentiles
from benchmarks.load import closed_loop
from benchmarks.shadow_cost import bench_shadow_cost, shadow_cost_rows
from benchmarks.streaming import openai_token, timed_streams, tutor_token
from benchmarks.turn_stages import served_stages, small_stages_in_process, stage_overheads
from deployments.config import config_deployments, config_placement
from models.common.registry import ModelRegistry
from models.emotion.classifier import EmotionClassifier
from tests.support.llm_stub import stub_process
from tests.support.serve_process import DEFAULT_CONFIG, free_port, serve_running, write_config

DIFFICULTY_BASELINE = "v1"  # DKT, benched beside the served tracer when that is another version
TURNS_BY_STAGE = 300
LEARNER_TEXTS = [
    "I don't understand why we flip the fraction when dividing.",
    "This is so frustrating, I keep getting the wrong answer!",
    "Oh wait, I think I finally get it now.",
    "Why does the slope tell us how steep the line is?",
    "I'm worried I'll fail the test tomorrow.",
    "ok next one",
    "That was actually kind of fun, can we do another?",
    "I give up, I'm just bad at math.",
]


def _texts(n: int) -> list[str]:
    return [f"{LEARNER_TEXTS[i % len(LEARNER_TEXTS)]} ({i})" for i in range(n)]


def _user_config(config: dict, name: str) -> dict:
    return config_deployments(config)[name].get("user_config", {})


# ---- in-process baselines -----------------------------------------------------------------


def bench_emotion_in_process(version: str, threads: int, seconds: float, backend="torch") -> dict:
    # backend: the runtime the Emotion replicas run (placement), so the limit is theirs.
    torch.set_num_threads(threads)
    artifact = ModelRegistry().load("emotion", version)
    runtime = {"backend": backend} | ({"threads": threads} if backend != "torch" else {})
    classifier = EmotionClassifier.from_artifact(artifact.path, **runtime)
    batch = _texts(32)
    classifier.predict(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.predict(batch)
        done += len(batch)
    throughput = done / (time.perf_counter() - started)
    single = []
    for text in _texts(100):
        t0 = time.perf_counter()
        classifier.predict([text])
        single.append((time.perf_counter() - t0) * 1000)
    return {
        "texts_per_s": round(throughput, 1),
        "single_text": percentiles(single),
        "torch_threads": threads,
        "backend": backend,
        "batch_size": 32,
        "model_version": artifact.metadata.version,
    }


# ---- served -------------------------------------------------------------------------------


def _tutor_request(client_index: int, i: int):
    return (
        "POST",
        "/v1/tutor",
        {
            "learner_id": f"bench-{client_index}",
            "message": LEARNER_TEXTS[i % len(LEARNER_TEXTS)],
            "answer": {"item_id": str(1366 + i), "skill_id": "9", "correct": i % 3 != 0},
            "candidates": [
                {"item_id": str(2000 + k), "skill_id": s}
                for k, s in enumerate(("9", "15", "7", "34"))
            ],
        },
    )


def _emotion_request(client_index: int, i: int):
    return "POST", "/v1/emotion", {"texts": [f"{LEARNER_TEXTS[(client_index + i) % 8]} {i}"]}


def _models_request(client_index: int, i: int):
    return "GET", "/v1/models", None


def bench_served(base_url: str, seconds: float) -> dict:
    closed_loop(base_url, 4, 3, _tutor_request)  # warm-up
    closed_loop(base_url, 32, 3, _emotion_request)
    return {
        "tutor_1_client": closed_loop(base_url, 1, seconds, _tutor_request),
        "tutor_stages_1_client": served_stages(base_url, TURNS_BY_STAGE, _tutor_request),
        "tutor_16_clients": closed_loop(base_url, 16, seconds, _tutor_request),
        "emotion_1_client": closed_loop(base_url, 1, seconds, _emotion_request),
        # The Ingress answering alone (no store, no model): what any request pays to get in.
        "models_list_1_client": closed_loop(base_url, 1, seconds / 3, _models_request),
        "emotion_32_clients": closed_loop(base_url, 32, seconds, _emotion_request),
    }


# ---- streaming through the router -----------------------------------------------------------

STUB_PACE = {"first_token_s": 0.1, "token_interval_s": 0.01, "words": 30}


def _direct_stream_request(client_index: int, i: int):
    messages = [{"role": "user", "content": LEARNER_TEXTS[i % len(LEARNER_TEXTS)]}]
    return "/stub/v1/chat/completions", {"model": "stub", "messages": messages, "stream": True}


def _tutor_stream_request(client_index: int, i: int):
    _, path, body = _tutor_request(client_index, i)
    return path, {**body, "stream": True}


def _streaming_row(served: dict, direct: dict) -> dict:
    """The tutor's stream against the provider's own: added time to the first token (the
    turn's other stages and the router) and the span over which tokens arrive (same: not
    buffered)."""

    def span(r: dict) -> float:
        return r["total"]["p50_ms"] - r["first_token"]["p50_ms"]

    return {
        "served": served,
        "direct": direct,
        "first_token_added_ms_p50": round(
            served["first_token"]["p50_ms"] - direct["first_token"]["p50_ms"], 1
        ),
        "token_span_ratio_p50": round(span(served) / span(direct), 3),
    }


def bench_streaming(config_path: Path, seconds: float) -> dict:
    results: dict = {"stub_pace": STUB_PACE}
    with stub_process(**STUB_PACE) as stub_url, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        provider = {"name": "stub", "base_url": f"{stub_url}/stub/v1", "model": "stub"}
        bench_config = write_config(
            Path(tmp) / "serve_config.yaml",
            port=port,
            base=config_path,
            store_uri=f"sqlite:///{tmp}/bench-stream-{uuid.uuid4().hex}.db",
            deployment_overrides={"LLMRouter": {"providers": [provider]}},
        )
        with serve_running(bench_config, port=port, log_path=Path(tmp) / "serve.log") as url:
            timed_streams(url, 4, 3, _tutor_stream_request, tutor_token)  # warm-up
            for clients in (1, 8):
                direct = timed_streams(
                    stub_url, clients, seconds, _direct_stream_request, openai_token
                )
                served = timed_streams(url, clients, seconds, _tutor_stream_request, tutor_token)
                results[f"{clients}_clients"] = _streaming_row(served, direct)
    return results


def _p50_p99(timing: dict) -> str:
    return f"p50 {timing['p50_ms']} ms / p99 {timing['p99_ms']} ms"


def _streaming_rows(streaming: dict) -> list[tuple[str, str, str]]:
    rows = []
    for clients in (1, 8):
        row = streaming[f"{clients}_clients"]
        served, direct = row["served"], row["direct"]
        rows.append(
            (
                f"/v1/tutor stream, {clients} client(s): first token",
                _p50_p99(served["first_token"]),
                f"provider alone p50 {direct['first_token']['p50_ms']} ms: "
                f"+{row['first_token_added_ms_p50']} ms",
            )
        )
        rows.append(
            (
                f"/v1/tutor stream, {clients} client(s): whole reply",
                _p50_p99(served["total"]),
                f"token span {row['token_span_ratio_p50']:.2f} of the provider's; "
                f"{served['streams_per_s']} turns/s",
            )
        )
    return rows


def _stage_rows(results: dict) -> list[tuple[str, str, str]]:
    stages = results["served"].get("tutor_stages_1_client", {}).get("stages", {})
    overheads = results.get("tutor_stage_overheads_ms", {})
    return [
        (
            f"/v1/tutor, 1 client, stage {stage}",
            f"p50 {timing['p50_ms']} ms",
            f"{overheads[stage]} ms more than in-process" if stage in overheads else "",
        )
        for stage, timing in stages.items()
    ]


def _table(results: dict) -> str:
    raw, served = results["in_process"], results["served"]
    e32 = served["emotion_32_clients"]
    rows = [
        (
            "emotion raw in-process, batch 32",
            f"{raw['emotion']['texts_per_s']} texts/s",
            f"1.00 ({raw['emotion']['torch_threads']} thread, "
            f"{raw['emotion'].get('backend', 'torch')}, as a replica)",
        ),
        (
            "emotion raw in-process, batch 32, all cores",
            f"{raw['emotion_all_cores']['texts_per_s']} texts/s",
            f"{raw['emotion_all_cores']['torch_threads']} threads",
        ),
        (
            "/v1/emotion, 32 clients, 1 text each",
            f"{e32['requests_per_s']} texts/s",
            f"{results['emotion_served_over_raw']:.2f} of 1 thread, "
            f"{results['emotion_served_over_raw_all_cores']:.2f} of all cores",
        ),
        ("emotion raw single text", f"p50 {raw['emotion']['single_text']['p50_ms']} ms", ""),
        (
            "/v1/emotion, 1 client",
            f"p50 {served['emotion_1_client']['p50_ms']} ms / "
            f"p99 {served['emotion_1_client']['p99_ms']} ms",
            "",
        ),
    ]
    for key, label in (("tutor_1_client", "1 client"), ("tutor_16_clients", "16 clients")):
        r = served[key]
        rows.append(
            (
                f"/v1/tutor, {label}",
                f"p50 {r['p50_ms']} ms / p99 {r['p99_ms']} ms",
                f"{r['requests_per_s']} turns/s",
            )
        )
    for key in ("difficulty", "difficulty_baseline"):
        d = raw.get(key)
        if d is None:
            continue
        label = f"difficulty {d['version']} ({d['architecture']}), {d['history_steps']} steps"
        rows.append(
            (
                f"{label}, fresh",
                f"p50 {d['fresh']['p50_ms']} ms / p99 {d['fresh']['p99_ms']} ms",
                f"{d['candidates']} candidates, nothing cached",
            )
        )
        rows.append(
            (
                f"{label}, next turn",
                f"p50 {d['next_turn']['p50_ms']} ms / p99 {d['next_turn']['p99_ms']} ms",
                f"{d['next_turn_speedup_p50']}x faster than fresh (encoding cache)",
            )
        )
        past = d.get("past_limit")
        if past:
            rows.append(
                (
                    f"difficulty {d['version']}, next turn past {past['answers']} answers",
                    f"p50 {past['windowed']['p50_ms']} ms / p99 {past['windowed']['p99_ms']} ms",
                    f"{past['windowed_speedup_p50']}x faster than the newest 1,000 rows",
                )
            )
    if "models_list_1_client" in served:
        rows.append(
            (
                "GET /v1/models, 1 client (the Ingress alone)",
                f"p50 {served['models_list_1_client']['p50_ms']} ms",
                "",
            )
        )
    rows += _stage_rows(results)
    if "streaming" in results:
        rows += _streaming_rows(results["streaming"])
    if "shadow_cost" in results:
        rows += shadow_cost_rows(results["shadow_cost"])
    width = max(len(r[0]) for r in rows)
    generator = results["served"]["emotion_32_clients"]["generator"]
    lines = [
        f"load generator: {generator}",
        f"{'measure'.ljust(width)} | value | ratio / note",
        "-" * (width + 40),
    ]
    lines += [f"{name.ljust(width)} | {value} | {note}" for name, value, note in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--seconds", type=float, default=15.0, help="per served measurement")
    args = parser.parse_args(argv)

    config = yaml.safe_load(args.config.read_text())
    placement = config_placement(config)
    threads = placement.get("Emotion", {}).get("torch_threads", 1)
    backend = placement.get("Emotion", {}).get("backend", "torch")
    emotion_version = _user_config(config, "Emotion").get("model_version", "latest")
    difficulty_threads = placement.get("Difficulty", {}).get("torch_threads", 1)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "config": str(args.config),
        "in_process": {
            "emotion": bench_emotion_in_process(emotion_version, threads, args.seconds, backend),
            # The whole machine's limit too: a served figure near the one-thread limit can still
            # leave the other core's share on the table.
            "emotion_all_cores": bench_emotion_in_process(
                emotion_version, os.cpu_count() or 1, args.seconds, backend
            ),
            "difficulty": bench_difficulty_in_process(
                _user_config(config, "Difficulty").get("model_version", "latest"),
                difficulty_threads,
            ),
        },
    }
    results["in_process"] |= small_stages_in_process()
    if results["in_process"]["difficulty"]["version"] != DIFFICULTY_BASELINE:
        results["in_process"]["difficulty_baseline"] = bench_difficulty_in_process(
            DIFFICULTY_BASELINE, difficulty_threads
        )
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        bench_config = write_config(
            Path(tmp) / "serve_config.yaml",
            port=port,
            base=args.config,
            store_uri=f"sqlite:///{tmp}/bench-{uuid.uuid4().hex}.db",
        )
        with serve_running(bench_config, port=port, log_path=Path(tmp) / "serve.log") as url:
            results["served"] = bench_served(url, args.seconds)
    results["streaming"] = bench_streaming(args.config, args.seconds)
    results["shadow_cost"] = bench_shadow_cost(args.config, args.seconds, _tutor_request)
    # Difficulty has no like-for-like in-process figure (the served learner's history grows
    # over the run), so its stage is reported without one.
    raw = results["in_process"]
    results["tutor_stage_overheads_ms"] = stage_overheads(
        results["served"]["tutor_stages_1_client"],
        {"emotion": raw["emotion"]["single_text"]}
        | {k: raw[k] for k in ("personalization", "reply")},
    )
    results["emotion_served_over_raw_all_cores"] = round(
        results["served"]["emotion_32_clients"]["requests_per_s"]
        / results["in_process"]["emotion_all_cores"]["texts_per_s"],
        3,
    )
    results["emotion_served_over_raw"] = round(
        results["served"]["emotion_32_clients"]["requests_per_s"]
        / results["in_process"]["emotion"]["texts_per_s"],
        3,
    )
    print(_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
