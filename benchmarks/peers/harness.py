"""`make bench-peers`: the project's /v1/emotion and /v1/tutor beside what a user would run
instead, on the same machine, in one run, one server up at a time.

Emotion (one text per request, the same texts and load generator for every contender):
raw in-process limit (batch 32; 1 and 2 threads), a naive FastAPI server (torch), BentoML 1.4
with adaptive batching (its default threads: all cores), the project's /v1/emotion; the raw
limit and BentoML on each runtime of ``--backends`` (torch, ONNX Runtime). Tutor (offline
responder): the no-op Serve graph of the tutor's shape (the floor), a single-process FastAPI
monolith of the same four models (on each runtime), the project's /v1/tutor.
Writes the raw figures and the issue's ratios (goal, met or not) to one JSON file.

The peer servers import benchmarks.peers.{served_model, fastapi_naive, bentoml_service} inside
venvs of their own (no project dependencies, no Ray): those modules and the package's
__init__ import nothing else of the project but models.emotion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

from benchmarks.cpu_time import cpu_window
from benchmarks.load import closed_loop, wrk_available
from benchmarks.peers import raw, report, servers, texts, venvs
from benchmarks.peers.monolith import monolith_running
from benchmarks.peers.monolith_app import HTTP_ONLY_PATH
from benchmarks.peers.tutor_floor import tutor_floor_running
from benchmarks.run import _tutor_request
from deployments.config import config_deployments, config_placement
from models.common.registry import ModelRegistry
from tests.support.serve_process import DEFAULT_CONFIG, free_port, serve_running, write_config

CHECK_TEXTS = 8  # texts every contender answers once, compared across contenders


def emotion_request_maker(bench_texts: list[str]):
    def make(client_index: int, i: int):
        # Clients start at different places in the list, so concurrent requests differ.
        text = bench_texts[(client_index * 16 + i) % len(bench_texts)]
        return "POST", "/v1/emotion", {"texts": [text]}

    return make


def results_of(body) -> list[dict]:
    """/v1/emotion and the naive server answer {"results": [...]}; BentoML a bare list."""
    return body["results"] if isinstance(body, dict) else body


def check_answers(base_url: str, sample: list[str]) -> list[dict]:
    answers = []
    for text in sample:
        response = httpx.post(f"{base_url}/v1/emotion", json={"texts": [text]}, timeout=60)
        response.raise_for_status()
        (one,) = results_of(response.json())
        if not {"state", "confidence", "states", "goemotions"} <= one.keys():
            raise ValueError(f"unexpected answer shape: {sorted(one)}")
        answers.append({"state": one["state"], "confidence": one["confidence"]})
    return answers


def load_rows(base_url: str, seconds: float, make, clients: tuple[int, ...]) -> dict:
    closed_loop(base_url, max(clients), min(3.0, seconds), make)  # warm-up
    rows = {}
    for c in clients:
        # The machine's 1-minute load when each measurement starts: on shared cores a
        # contender measured while others worked is slower for it, not for how it serves.
        load_before = round(os.getloadavg()[0], 2)
        with cpu_window() as cpu:
            row = closed_loop(base_url, c, seconds, make)
        rows[f"{c}_client{'s' if c > 1 else ''}"] = {
            **row,
            "load_average_1m": load_before,
            # What a request cost the server side in CPU (every process but the load generator).
            **cpu.summary(row["n"]),
        }
    return rows


def bench_emotion_server(running, kind: str, label: str, seconds: float, bench_texts) -> dict:
    with running as url:
        row = {"label": label, "answers": check_answers(url, bench_texts[:CHECK_TEXTS])}
        if kind != "project":
            row["info"] = servers.peer_info(url, kind)
        row.update(load_rows(url, seconds, emotion_request_maker(bench_texts), (1, 32)))
    return row


def agreement(emotion: dict) -> dict:
    """Same model, same texts: every contender should give the same states and confidences."""
    answered = {
        k: v["answers"] for k, v in emotion.items() if isinstance(v, dict) and "answers" in v
    }
    if len(answered) < 2:
        return {}
    ref_key, ref = next(iter(answered.items()))
    return {
        "reference": ref_key,
        "same_state": {
            k: all(a["state"] == r["state"] for a, r in zip(v, ref, strict=True))
            for k, v in answered.items()
        },
        "max_confidence_diff": {
            k: round(
                max(abs(a["confidence"] - r["confidence"]) for a, r in zip(v, ref, strict=True)), 6
            )
            for k, v in answered.items()
        },
    }


def project_app(config: Path, tmp: Path, env: dict[str, str]):
    port = free_port()
    bench_config = write_config(
        tmp / "serve_config.yaml",
        port=port,
        base=config,
        store_uri=f"sqlite:///{tmp}/peers-{uuid.uuid4().hex}.db",
    )
    return serve_running(bench_config, port=port, log_path=tmp / "serve.log", env=env)


def offline_env(config: Path) -> dict[str, str]:
    """Provider keys named in the config (and TUTOR_PROVIDERS) blanked: the offline responder."""
    names = {"TUTOR_PROVIDERS"}
    for d in config_deployments(yaml.safe_load(config.read_text())).values():
        for p in d.get("user_config", {}).get("providers", []) or []:
            if p.get("api_key_env"):
                names.add(p["api_key_env"])
    for name in names:
        os.environ.pop(name, None)  # this process and every server it starts
    return {}


def _project_backend(config: Path) -> str:
    placement = config_placement(yaml.safe_load(config.read_text()))
    return placement.get("Emotion", {}).get("backend", "torch")


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def _project_versions() -> dict:
    keep = {
        "ray",
        "torch",
        "transformers",
        "tokenizers",
        "peft",
        "numpy",
        "onnxruntime",
        "fastapi",
        "uvicorn",
        "starlette",
        "pydantic",
        "httpx",
    }
    frozen = venvs.freeze(sys.executable)
    return {k: v for k, v in frozen.items() if k.lower() in keep}


def suffix(backend: str) -> str:
    """Result keys: torch's rows keep the plain names (raw_2_threads, bentoml, monolith), the
    other runtimes' get theirs appended (bentoml_onnx)."""
    return "" if backend == "torch" else f"_{backend}"


def run_emotion(args, results: dict, artifact: Path, bench_texts: list[str], tmp: Path) -> None:
    emotion: dict = {}
    pythons = {name: venvs.ensure(name) for name in ("fastapi", "bentoml")}
    results["versions"].update({name: venvs.freeze(p) for name, p in pythons.items()})
    for backend in args.backends:
        peer_env = {"PEER_BACKEND": backend}
        for threads in (1, 2):
            print(f"[peers] raw in-process, {backend}, {threads} thread(s)", flush=True)
            key = f"raw_{threads}_thread{'s' if threads > 1 else ''}{suffix(backend)}"
            emotion[key] = raw.measure_in_subprocess(artifact, threads, args.seconds, env=peer_env)
        if backend == "torch":  # what a user writes first: torch, no batching
            print("[peers] naive FastAPI", flush=True)
            emotion["fastapi_naive"] = bench_emotion_server(
                servers.naive_running(pythons["fastapi"], artifact, tmp / "naive.log", peer_env),
                "fastapi",
                "naive FastAPI + uvicorn, one process (torch)",
                args.seconds,
                bench_texts,
            )
        print(f"[peers] BentoML, {backend}, its default threads", flush=True)
        key = f"bentoml{suffix(backend)}"
        emotion[key] = bench_emotion_server(
            servers.bentoml_running(pythons["bentoml"], artifact, tmp / f"{key}.log", peer_env),
            "bentoml",
            f"BentoML 1.4 adaptive batching, 1 worker ({backend})",
            args.seconds,
            bench_texts,
        )
    print("[peers] the project's /v1/emotion (and /v1/tutor)", flush=True)
    with project_app(args.config, tmp, offline_env(args.config)) as url:
        emotion["project"] = {
            "label": "this project's /v1/emotion",
            "answers": check_answers(url, bench_texts[:CHECK_TEXTS]),
            **load_rows(url, args.seconds, emotion_request_maker(bench_texts), (1, 32)),
        }
        if args.only != "emotion":
            results["tutor"]["project"] = {
                "label": "this project's /v1/tutor",
                **load_rows(url, args.seconds, _tutor_request, (1, 16)),
            }
    emotion["agreement"] = agreement(emotion)
    results["emotion"] = emotion


def _http_only_request(client_index: int, i: int):
    method, _, body = _tutor_request(client_index, i)
    return method, HTTP_ONLY_PATH, body


def run_tutor(args, results: dict, tmp: Path) -> None:
    tutor = results["tutor"]
    if "project" not in tutor:
        with project_app(args.config, tmp, offline_env(args.config)) as url:
            tutor["project"] = {
                "label": "this project's /v1/tutor",
                **load_rows(url, args.seconds, _tutor_request, (1, 16)),
            }
    offline_env(args.config)
    print("[peers] tutor floor", flush=True)
    with tutor_floor_running(base_config=args.config) as url:
        tutor["floor"] = {
            "label": "no-op Serve graph of the tutor's shape",
            **load_rows(url, args.seconds, _tutor_request, (1, 16)),
        }
    for backend in args.backends:  # the floor has no model; the monolith runs each runtime
        print(f"[peers] tutor monolith, {backend}", flush=True)
        with monolith_running(emotion_backend=backend, config=args.config) as url:
            tutor[f"monolith{suffix(backend)}"] = {
                "label": f"FastAPI monolith, one process ({backend})",
                **load_rows(url, args.seconds, _tutor_request, (1, 16)),
                # The same process answering the same requests with no work: its HTTP's share.
                "http_only": load_rows(url, args.seconds, _http_only_request, (1, 16)),
            }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/peers.json"))
    parser.add_argument("--seconds", type=float, default=15.0, help="per load measurement")
    parser.add_argument("--only", choices=("emotion", "tutor"))
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("torch", "onnx"),
        default=["torch", "onnx"],
        help="emotion runtimes the raw limit, BentoML and the monolith run with (each a row); "
        "the project runs what its config says",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()

    emotion_cfg = config_deployments(yaml.safe_load(args.config.read_text()))["Emotion"]
    version = emotion_cfg.get("user_config", {}).get("model_version", "latest")
    artifact = ModelRegistry().load("emotion", version).path
    bench_texts = texts.benchmark_texts()
    from models.emotion.encoder import load_tokenizer
    from models.emotion.quantization import read_recipe

    results: dict = {
        "machine": machine(),
        "config": str(args.config),
        "emotion_version": artifact.name,
        # An int8 version runs int8 wherever ONNX Runtime runs it (the project and the _onnx
        # peers, like with like); the torch peers run the fp32 weights it was quantized from.
        "emotion_int8": read_recipe(artifact) is not None,
        "peer_backends": args.backends,
        "project_backend": _project_backend(args.config),
        "seconds_per_measurement": args.seconds,
        "generator": "wrk" if wrk_available() else "httpx",
        "texts": texts.length_stats(bench_texts, load_tokenizer()),
        "versions": {"project": _project_versions()},
        "tutor": {},
    }
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.only != "tutor":
            run_emotion(args, results, artifact, bench_texts, tmp)
        if args.only != "emotion":
            run_tutor(args, results, tmp)
    results["ratios"] = report.ratios(results)
    results["tutor_bounds"] = report.tutor_bounds(results)
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.monotonic() - started)
    print(report.table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['wall_s']} s)")
    return results
