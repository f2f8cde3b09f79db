"""Does an int8 emotion version answer the same on CPUs other than the one it was made on?

ONNX Runtime picks its int8 kernels by CPU: with AVX-512 VNNI (the Xeon this version was
measured on) products are summed in 32 bits; with AVX2 alone (AMD EPYC before Zen 4, Intel
before Cascade Lake) pairs of products are summed in 16 bits first, which saturates unless the
weights were quantized to 7 bits (the recipe's ``reduce_range``, models/emotion/quantization.py).
This check runs the version's int8 file over the same token batches here and under
``qemu-x86_64 -cpu <model>`` (user-mode emulation: the process sees that CPU's instruction sets
and ONNX Runtime takes its kernels for them), then compares the raw outputs and what the
classifier makes of them: learning states and GoEmotions label sets.

    make check-emotion-portability      # needs qemu-user (apt-get install qemu-user)

Emulation is slow (~23 min a model on one core for the default set: the 96 learner messages of
the state test set plus the first 64 GoEmotions test sentences; the control doubles it). Writes
reports/emotion_<version>_portability.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.emotion.batching import token_batches
from models.emotion.classifier import EmotionClassifier
from models.emotion.onnx_scorer import cached_model
from models.emotion.quantization import read_recipe, recipe_key
from pipelines.common import REPO_ROOT, code_version, setup_logging
from pipelines.emotion import portability_worker
from pipelines.emotion.evaluate_learning_states import DEFAULT_SET, read_set
from pipelines.emotion.goemotions import DEFAULT_DATA, MODEL_NAME, read_split

logger = logging.getLogger(__name__)

# AMD EPYC Rome (Zen 2): AVX2 without AVX-512 or VNNI. Every AVX2-only CPU takes the same ONNX
# Runtime int8 kernels; other qemu models (Haswell-v4, ...) can be named with --cpus.
DEFAULT_CPUS = ("EPYC-Rome",)
EMULATION_TIMEOUT_S = 3600
# The control: the recipe with 8-bit weights, whose pairs of products can pass 16 bits.
CONTROL = "control_8bit_weights"
CONTROL_CHANGE = {"reduce_range": False}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="v5", help="an int8 emotion version")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--cpus", nargs="+", default=list(DEFAULT_CPUS), help="qemu -cpu models")
    parser.add_argument("--goemotions", type=int, default=64, help="GoEmotions test sentences")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--qemu", default="qemu-x86_64")
    parser.add_argument(
        "--no-control", dest="control", action="store_false",
        help="skip the control (the recipe with 8-bit weights), halving the emulated time",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def write_batches(batches: list, path: Path) -> None:
    arrays = {"count": np.asarray(len(batches))}
    for k, (_, ids, mask) in enumerate(batches):
        arrays[f"ids_{k}"], arrays[f"mask_{k}"] = ids, mask
    np.savez(path, **arrays)


def read_outputs(batches: list, path: Path, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """The worker's per-batch outputs back in the order of the texts."""
    saved = np.load(path)
    logits = np.full((n_texts, saved["logits_0"].shape[1]), np.nan)
    pooled = np.full((n_texts, saved["pooled_0"].shape[1]), np.nan)
    for k, (idx, _, _) in enumerate(batches):
        logits[idx], pooled[idx] = saved[f"logits_{k}"], saved[f"pooled_{k}"]
    assert not np.isnan(logits).any(), "every text was scored"
    return logits, pooled


def compare(native: tuple, other: tuple, native_answers: list, other_answers: list) -> dict:
    """How far another CPU's outputs and answers are from this machine's."""
    logit_gap = float(np.abs(native[0] - other[0]).max())
    pooled_gap = float(np.abs(native[1] - other[1]).max())
    state_gap = max(
        abs(a.states[s] - b.states[s])
        for a, b in zip(native_answers, other_answers, strict=True)
        for s in a.states
    )
    pairs = list(zip(native_answers, other_answers, strict=True))
    return {
        "identical_outputs": logit_gap == 0.0 and pooled_gap == 0.0,
        "max_abs_logit_diff": logit_gap,
        "max_abs_pooled_diff": pooled_gap,
        "max_abs_state_probability_diff": float(state_gap),
        "states_changed": sum(a.state != b.state for a, b in pairs),
        "label_sets_changed": sum(a.predicted != b.predicted for a, b in pairs),
    }


def run_worker(command: list[str], model: Path, batches: Path, out: Path) -> dict:
    args = [*command, "-m", portability_worker.__name__, str(model), str(batches), str(out)]
    done = subprocess.run(
        args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=EMULATION_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def scorer_batches(scorer, texts: list[str]) -> list:
    """The scorer's own token batches (its grouping by length, its padding)."""
    return token_batches(
        scorer.tokenizer, texts, max_length=scorer.max_length, batch_size=scorer.batch_size,
        overhead_tokens=scorer.overhead_tokens,
    )  # fmt: skip


def check_models(artifact_path: Path, recipe: dict, control: bool) -> dict[str, Path]:
    """The version's int8 file and, as the control, the same recipe with 8-bit weights: if the
    emulated CPU really takes its own kernels, the control must come out different there."""
    models = {"int8": cached_model(artifact_path, quantization=recipe)[0]}
    if control:
        models[CONTROL] = cached_model(artifact_path, quantization=recipe | CONTROL_CHANGE)[0]
    return models


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    if shutil.which(args.qemu) is None:
        raise SystemExit(f"{args.qemu} not found: apt-get install qemu-user")
    artifact = ModelRegistry(args.registry).load(MODEL_NAME, args.version)
    recipe = read_recipe(artifact.path)
    if recipe is None:
        raise SystemExit(f"{MODEL_NAME} {args.version} is not an int8 version: nothing to check")
    models = check_models(artifact.path, recipe, args.control)
    classifier = EmotionClassifier.from_artifact(artifact.path, threads=1)
    learner_texts, _ = read_set(DEFAULT_SET)
    goemotions_texts = (
        read_split(args.data, "test", limit=args.goemotions)[0] if args.goemotions > 0 else []
    )
    texts = learner_texts + goemotions_texts
    batches = scorer_batches(classifier.scorer, texts)

    native: dict = {"cpu": host_cpu()}
    emulated: list[dict] = [{"qemu_cpu": cpu} for cpu in args.cpus]
    with tempfile.TemporaryDirectory() as tmp:
        batches_path = Path(tmp) / "batches.npz"
        write_batches(batches, batches_path)
        for name, model in models.items():
            out = Path(tmp) / f"{name}-here.npz"
            here = run_worker([sys.executable], model, batches_path, out)
            native["cpu_features"] = here.pop("cpu_features")
            native[name] = here
            outputs = read_outputs(batches, out, len(texts))
            native_answers = classifier.predict_outputs(*outputs)
            for entry in emulated:
                cpu = entry["qemu_cpu"]
                logger.info("%s: %d texts under %s -cpu %s", name, len(texts), args.qemu, cpu)
                out = Path(tmp) / f"{name}-{cpu}.npz"
                command = [args.qemu, "-cpu", cpu, sys.executable]
                seen = run_worker(command, model, batches_path, out)
                entry["cpu_features"] = seen.pop("cpu_features")
                other = read_outputs(batches, out, len(texts))
                other_answers = classifier.predict_outputs(*other)
                entry[name] = seen | compare(outputs, other, native_answers, other_answers)
                logger.info("%s on %s: %s", name, cpu, entry[name])

    report = {
        "what": "int8 emotion outputs and answers on CPUs without AVX-512 VNNI (qemu user-mode "
        "emulation) against this machine's",
        "version": args.version,
        "recipe_key": recipe_key(recipe),
        "texts": {"learner_messages": len(learner_texts), "goemotions_test": len(goemotions_texts)},
        "native": native,
        "emulated": emulated,
        "code_version": code_version(),
        "command": "python -m pipelines.emotion.portability " + " ".join(argv or sys.argv[1:]),
    }
    if args.control:
        report[CONTROL] = {
            "recipe_change": CONTROL_CHANGE,
            "recipe_key": recipe_key(recipe | CONTROL_CHANGE),
        }
    out_path = args.out or REPO_ROOT / "reports" / f"emotion_{args.version}_portability.json"
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    logger.info("wrote %s", out_path)
    return report


if __name__ == "__main__":
    main()
