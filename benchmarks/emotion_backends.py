"""The emotion encoder's backends in-process: torch against ONNX Runtime, same texts, same run.

    python -m benchmarks.emotion_backends [--out benchmarks/results/emotion_backends.json]
        [--n 384] [--rounds 3] [--quick]

Texts of realistic length: the learner messages (tests/data, dev and test) and GoEmotions test
sentences of 10-25 words, shuffled with a fixed seed. Measured (variants interleaved round by
round, medians of the rounds, so a busy moment of a shared machine hits every variant alike):

* throughput at batch 32 (texts/s and CPU seconds per 1,000 texts: spinning threads burn CPU
  that the rest of a serving process would use) for torch and ORT at 1 and 2 threads, ORT with
  intra-op spinning on and off, with and without onnxruntime's BERT fusion;
* single-text latency p50/p99;
* length grouping (``models.emotion.batching``): batches of 32, 16 and 8 texts as they would
  arrive, scored in one padded batch against cut into token-count groups;
* load times: the export (cold cache), the cached load (warm) and torch's ``from_artifact``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.emotion.artifact import load_model
from models.emotion.batching import token_batches
from models.emotion.encoder import load_tokenizer
from models.emotion.onnx_scorer import OnnxScorer, cached_model
from pipelines.common import REPO_ROOT, use_offline_models
from pipelines.emotion.goemotions import DEFAULT_DATA, read_split

ARTIFACT = REPO_ROOT / "models" / "artifacts" / "emotion" / "v4"
LEARNER_SETS = ("learner_messages_dev.jsonl", "learner_messages_test.jsonl")
OVERHEADS = (None, 16.0, 64.0)  # grouping: None = one padded batch (today)


def benchmark_texts(n: int, seed: int = 0) -> list[str]:
    texts = []
    for name in LEARNER_SETS:
        with (REPO_ROOT / "tests" / "data" / name).open(encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    goemotions = read_split(DEFAULT_DATA, "test")[0]
    texts += [t for t in goemotions if 10 <= len(t.split()) <= 25]
    random.Random(seed).shuffle(texts)
    return texts[:n]


class TorchRunner:
    """The merged torch model over ``token_batches`` (today's FineTunedScorer without grouping)."""

    def __init__(self, model, tokenizer, max_length: int) -> None:
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def outputs(self, texts, *, batch_size, overhead_tokens=None):
        out = []
        batches = token_batches(self.tokenizer, texts, max_length=self.max_length,
                                batch_size=batch_size, overhead_tokens=overhead_tokens)  # fmt: skip
        with torch.inference_mode():
            for _, ids, mask in batches:
                pooled = self.model.pool(torch.from_numpy(ids), torch.from_numpy(mask))
                out.append(self.model.head(pooled)[0])
        return out


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def throughput(run, texts, batch, overhead, threads) -> dict:
    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    wall, cpu = timed(lambda: [run(c, batch, overhead, threads) for c in chunks])
    return {"texts_per_s": round(len(texts) / wall, 1),
            "cpu_s_per_1000": round(1000 * cpu / len(texts), 2)}  # fmt: skip


def interleaved(variants: dict, texts, batch, overhead, rounds) -> dict:
    """One pass of every variant per round; medians per variant."""
    results = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (run, threads) in variants.items():
            results[name].append(throughput(run, texts, batch, overhead, threads))
    return {
        name: {key: float(np.median([r[key] for r in rs])) for key in rs[0]}
        for name, rs in results.items()
    }


def latency(run, texts, threads) -> dict:
    samples = []
    for t in texts:
        start = time.perf_counter()
        run([t], 1, None, threads)
        samples.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": round(float(np.percentile(samples, 50)), 2),
            "p99_ms": round(float(np.percentile(samples, 99)), 2), "n": len(samples)}  # fmt: skip


def load_times(cache_dir: Path) -> dict:
    """Each in a fresh interpreter, so no import or file is already warm from this process."""
    code = (
        "import sys,time,json; t=time.perf_counter();"
        "from models.emotion.classifier import EmotionClassifier as E;"
        f"E.from_artifact({str(ARTIFACT)!r}, backend=sys.argv[1], threads=2,"
        f" onnx_cache_dir={str(cache_dir)!r}); print(json.dumps(time.perf_counter()-t))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = {}
    for name, backend in (("onnx_cold_s", "onnx"), ("onnx_warm_s", "onnx"), ("torch_s", "torch")):
        proc = subprocess.run([sys.executable, "-c", code, backend], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True)  # fmt: skip
        out[name] = round(json.loads(proc.stdout.strip().splitlines()[-1]), 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks/results/emotion_backends.json"
    )
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a few texts, one round (a smoke run)")
    args = p.parse_args(argv)
    use_offline_models(2)
    n, rounds = (64, 1) if args.quick else (args.n, args.rounds)
    texts = benchmark_texts(n)
    tokenizer = load_tokenizer()
    tokens = [len(x) for x in tokenizer(texts)["input_ids"]]
    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
        },  # fmt: skip
        "texts": {"n": len(texts), "tokens_p50": int(np.median(tokens)), "tokens_max": max(tokens)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["load"] = load_times(Path(tmp) / "cache")
        cache = Path(tmp) / "fused"
        fused_path, fused_t = cached_model(ARTIFACT, cache_dir=cache, fuse=True)
        plain_path, plain_t = cached_model(ARTIFACT, cache_dir=cache, fuse=False)
        report["export"] = {"fused": fused_t, "unfused": plain_t}
        model = load_model(ARTIFACT).merge().eval()
        torch_runner = TorchRunner(model, tokenizer, model.config.max_length)
        sessions = {}

        def ort(path, spinning):
            def run(chunk, batch, overhead, threads):
                key = (path, spinning, threads)
                if key not in sessions:
                    sessions[key] = OnnxScorer(path, tokenizer, max_length=64, threads=threads,
                                               spinning=spinning)  # fmt: skip
                scorer = sessions[key]
                scorer.batch_size, scorer.overhead_tokens = batch, overhead
                scorer.outputs(chunk)

            return run

        def torch_run(chunk, batch, overhead, threads):
            torch.set_num_threads(threads)
            torch_runner.outputs(chunk, batch_size=batch, overhead_tokens=overhead)

        runs = {
            "torch": torch_run,
            "ort": ort(fused_path, False),
            "ort_spinning": ort(fused_path, True),
            "ort_unfused": ort(plain_path, False),
        }
        variants = {f"{b}_t{t}": (runs[b], t) for b in runs for t in (1, 2)}
        for run, threads in variants.values():  # warm-up: sessions built, first-call costs paid
            run(texts[:32], 32, None, threads)
        report["batch32"] = interleaved(variants, texts, 32, None, rounds)
        report["single_text"] = {
            name: latency(run, texts[: min(len(texts), 120)], t)
            for name, (run, t) in variants.items()
            if not name.startswith(("ort_spinning", "ort_unfused"))
        }
        grouping = {}
        contenders = {k: variants[k] for k in ("torch_t1", "ort_t1", "ort_unfused_t1", "ort_t2")}
        for batch in (32, 16, 8):
            for overhead in OVERHEADS:
                for name, r in interleaved(contenders, texts, batch, overhead, rounds).items():
                    grouping[f"{name} batch{batch} overhead={overhead}"] = r
        report["grouping"] = grouping
    report["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
