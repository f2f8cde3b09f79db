"""int8 weights and activations for the fine-tuned encoder on ONNX Runtime: the recipe, and the
file it makes.

An artifact that holds ``quantization.json`` runs its encoder in int8: the cached fp32 export
(``models.emotion.onnx_scorer``) goes through ONNX Runtime's static quantization, and the result
is cached beside it. The recipe, measured on v4 (issue 18's closing note, ``/tmp`` scripts):

* **Static, not dynamic.** Dynamic quantization picks each MatMul's activation scale from the
  whole batch at run time, so a text's scores depend on the texts it is batched with: on the
  576 labelled learner messages, logits moved by 0.14 on average (up to 1.6) between alone and
  batched, and 14 learning states flipped. Static quantization fixes every activation range
  ahead of time from calibration texts, so a text scores the same alone or in any batch (the
  classifier's promise) and every replica makes the same file.
* **Calibration:** ``CALIBRATION_TEXTS`` GoEmotions train sentences (seeded sample), stored in
  the artifact so a replica never needs the dataset; histogram percentile ranges (min/max
  ranges cost 0.014 macro-F1). Batches are padded or cut to ``calibration_tokens`` because the
  histogram collectors need one shape.
* **What stays fp32:** each layer's FFN down-projection (``layer.N/output/dense``: GELU outputs
  have outliers that one int8 range cannot hold; quantizing them cost 0.009-0.014 macro-F1) and
  the attention-score MatMuls (activation x activation; no gain measured). The other MatMuls
  (Q, K, V, attention output, FFN up-projection) run int8, weights one scale per output
  channel, 7-bit (``reduce_range``) so that CPUs without VNNI, whose int8 kernels add pairs of
  products in 16 bits, cannot saturate and give other numbers than CPUs with it.
* The learner-state head reads the encoder's pooled embedding, which int8 moves a little, so an
  int8 version carries a head fitted on its own int8 features (``pipelines.emotion.quantize``),
  never the fp32 version's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZATION_FILE = "quantization.json"
CALIBRATION_TEXTS = 256
CALIBRATION_BATCH = 32
INT8_STATIC: dict[str, Any] = {
    "method": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "weight_type": "QInt8",
    "activation_type": "QUInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types": ["MatMul"],
    "calibration": "Percentile",
    # Calibration batches are padded (or cut) to this many tokens: the histogram collectors need
    # one shape, and learner messages are ~20 tokens (64, the model's limit, took 36 s a file).
    "calibration_tokens": 32,
    "keep_fp32": [r"layer\.\d+/output/dense/", r"attention/self/MatMul"],
}
# The recipe's keys; ``calibration_texts`` (the sentences themselves) is added per version.
_KEYS = set(INT8_STATIC) | {"calibration_texts"}


def read_recipe(artifact_dir: Path | str) -> dict[str, Any] | None:
    """The artifact's quantization recipe, or None for an fp32 artifact."""
    path = Path(artifact_dir) / QUANTIZATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_recipe(directory: Path | str, recipe: dict[str, Any]) -> None:
    check_recipe(recipe)
    (Path(directory) / QUANTIZATION_FILE).write_text(json.dumps(recipe, indent=2) + "\n")


def check_recipe(recipe: dict[str, Any]) -> None:
    """Only the recipe this module knows how to make; anything else is an error, not a guess."""
    if recipe.get("method") != INT8_STATIC["method"]:
        raise ValueError(f"unknown quantization method {recipe.get('method')!r}")
    if set(recipe) != _KEYS:
        raise ValueError(
            f"a quantization recipe has exactly the keys {sorted(_KEYS)}; got {sorted(recipe)}"
        )
    if not recipe["calibration_texts"]:
        raise ValueError("a static recipe needs calibration texts")


def recipe_key(recipe: dict[str, Any]) -> str:
    """A short digest of the recipe (calibration texts included), for the cached file's name."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


class _CalibrationBatches:
    """ONNX Runtime's ``CalibrationDataReader``: the calibration texts as padded id batches."""

    def __init__(self, texts: list[str], tokenize: Callable[[list[str]], dict]) -> None:
        self._batches = iter(
            tokenize(texts[i : i + CALIBRATION_BATCH])
            for i in range(0, len(texts), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize(
    source: Path | str,
    out: Path | str,
    recipe: dict[str, Any],
    tokenize: Callable[[list[str]], dict[str, np.ndarray]],
) -> None:
    """Write ``source`` (an fp32 ONNX file) to ``out`` quantized by the recipe; ``tokenize``
    turns texts into the model's inputs, padded to one length."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_recipe(recipe)
    keep = [re.compile(p) for p in recipe["keep_fp32"]]
    kept = [
        n.name for n in onnx.load(str(source)).graph.node if any(p.search(n.name) for p in keep)
    ]
    quantize_static(
        str(source), str(out),
        _CalibrationBatches(list(recipe["calibration_texts"]), tokenize),
        quant_format=QuantFormat[recipe["format"]],
        op_types_to_quantize=list(recipe["op_types"]),
        per_channel=bool(recipe["per_channel"]),
        reduce_range=bool(recipe["reduce_range"]),
        activation_type=QuantType[recipe["activation_type"]],
        weight_type=QuantType[recipe["weight_type"]],
        calibrate_method=CalibrationMethod[recipe["calibration"]],
        nodes_to_exclude=kept,
    )  # fmt: skip
