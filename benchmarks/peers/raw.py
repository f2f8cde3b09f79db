"""The raw in-process limit: the same classifier called in a loop, no server, no HTTP.

Run in a subprocess per thread count (`python -m benchmarks.peers.raw --threads N ...`): torch's
thread pool is per process and cannot be shrunk reliably once used, so settings never leak
between measurements. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.peers.texts import DEFAULT_N, benchmark_texts

BATCH = 32
IDLE_GAP_S = 0.01  # about what a one-client tutor turn leaves its Emotion replica idle


def measure(artifact: Path, threads: int, seconds: float, n_texts: int = DEFAULT_N) -> dict:
    os.environ["PEER_ARTIFACT"] = str(artifact)
    os.environ["PEER_THREADS"] = str(threads)
    from benchmarks.peers.served_model import info, load_classifier

    classifier = load_classifier()
    texts = benchmark_texts(n_texts)
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    classifier.predict(batches[0])  # warm-up at full batch
    load_before = round(os.getloadavg()[0], 2)
    done, i, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = batches[i % len(batches)]
        classifier.predict(batch)
        done += len(batch)
        i += 1
    throughput = done / (time.perf_counter() - started)
    single = _single_text_ms(classifier, texts[:200])
    # A server at one client is idle between requests (the client's round trip; in a tutor turn
    # the rest of the turn), and the same forward pass then costs more than back to back (most
    # likely the weights going cold in the caches: two copies taken in turns cost more still).
    after_idle = _single_text_ms(classifier, texts[:200], idle_s=IDLE_GAP_S)
    return {
        "texts_per_s": round(throughput, 1),
        "batch_size": BATCH,
        "torch_threads": threads,
        "single_text_p50_ms": round(float(np.percentile(single, 50)), 2),
        "single_text_p99_ms": round(float(np.percentile(single, 99)), 2),
        "single_text_after_idle_p50_ms": round(float(np.percentile(after_idle, 50)), 2),
        "idle_gap_ms": round(IDLE_GAP_S * 1000),
        "info": info(),
        "load_average_1m": load_before,
    }


def _single_text_ms(classifier, texts: list[str], idle_s: float = 0.0) -> list[float]:
    """Each text alone through the classifier (ms), after ``idle_s`` asleep."""
    took = []
    for text in texts:
        if idle_s:
            time.sleep(idle_s)
        t0 = time.perf_counter()
        classifier.predict([text])
        took.append((time.perf_counter() - t0) * 1000)
    return took


def measure_in_subprocess(
    artifact: Path, threads: int, seconds: float, env: dict[str, str] | None = None
) -> dict:
    command = [sys.executable, "-m", "benchmarks.peers.raw", "--artifact", str(artifact)]
    command += ["--threads", str(threads), "--seconds", str(seconds)]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"raw measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.artifact, args.threads, args.seconds)))


if __name__ == "__main__":
    main()
