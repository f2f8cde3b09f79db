"""Runs an ONNX file over pre-tokenized batches on whatever CPU it finds itself on.

``pipelines.emotion.portability`` starts it under ``qemu-x86_64 -cpu <model>`` so that ONNX
Runtime picks the kernels that CPU has (no AVX-512, no VNNI on an AMD EPYC Rome), and compares
what it writes with the same batches run on this machine. Kept to numpy, ONNX Runtime and the
scorer's session options: under emulation every import costs ~20x.

    python -m pipelines.emotion.portability_worker MODEL.onnx IN.npz OUT.npz
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def cpu_features() -> dict[str, bool]:
    """The instruction sets this process sees (CPUID, as emulated), as numpy detected them."""
    from numpy._core._multiarray_umath import __cpu_features__

    wanted = ("AVX2", "FMA3", "AVX512F", "AVX512_SKX", "AVX512VNNI")
    return {name: bool(__cpu_features__.get(name, False)) for name in wanted}


def run(model_path: str, batches_path: str, out_path: str) -> dict:
    import onnxruntime as ort

    from models.emotion.onnx_scorer import session_options

    # One thread, as a served replica runs it (serve_config.yaml's torch_threads: 1).
    session = ort.InferenceSession(
        model_path, session_options(1), providers=["CPUExecutionProvider"]
    )
    batches = np.load(batches_path)
    count = int(batches["count"])
    logits, pooled = [], []
    started = time.perf_counter()
    for k in range(count):
        feed = {"input_ids": batches[f"ids_{k}"], "attention_mask": batches[f"mask_{k}"]}
        batch_logits, batch_pooled = session.run(None, feed)
        logits.append(batch_logits)
        pooled.append(batch_pooled)
    seconds = time.perf_counter() - started
    np.savez(out_path, **{f"logits_{k}": v for k, v in enumerate(logits)},
             **{f"pooled_{k}": v for k, v in enumerate(pooled)})  # fmt: skip
    return {"cpu_features": cpu_features(), "batches": count, "seconds": round(seconds, 1)}


if __name__ == "__main__":
    print(json.dumps(run(*sys.argv[1:4])))
