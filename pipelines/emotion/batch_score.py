"""Batch scoring of an emotion version over logged turns (the per-model half of
``pipelines.batch_score``).

Each logged turn's message is scored by the candidate version; the served output is already in
the log (``emotion_state`` and the distribution in ``emotion_json``, from ``version_emotion``),
so it is compared as logged, not recomputed. A turn whose emotion stage fell back (the version
is ``unavailable`` or one the registry lacks, or no distribution was logged) is scored but left
out of the comparison, and counted.

The scored rows keep the turn's keys, never its message (the learner's text is personal data
and the scores do not need it again).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import torch

from models.common.registry import ModelRegistry
from models.common.vocab import LEARNING_STATES
from models.emotion.classifier import EmotionClassifier
from models.emotion.learning_states import calibrate_states
from pipelines.batch_score import Check

MODEL_NAME = "emotion"
INPUT_COLUMNS = [
    "turn_id", "learner_id", "ts", "message", "emotion_state", "emotion_json", "version_emotion",
]  # fmt: skip
# Turns read on the driver at most (their messages: a few hundred bytes each, ~1 GB at most).
DRIVER_MAX_TURNS = 2_000_000
STATE_COLUMNS = [f"p_{state}" for state in LEARNING_STATES]
SERVED_COLUMNS = [f"served_p_{state}" for state in LEARNING_STATES]
OUTPUT_COLUMNS = [
    "turn_id", "learner_id", "ts", "version", "state", "confidence", *STATE_COLUMNS,
    "served_version", "served_state", *SERVED_COLUMNS, "comparable", "shift_tv",
]  # fmt: skip


def served_distribution(emotion_json: Any) -> np.ndarray:
    """The logged EmotionResult's ``states`` as a vector in LEARNING_STATES order; NaNs when
    the turn logged none (a fallback) or it does not sum to ~1."""
    try:
        states = json.loads(emotion_json)["states"]
        vector = np.array([float(states[s]) for s in LEARNING_STATES])
    except (TypeError, ValueError, KeyError):
        return np.full(len(LEARNING_STATES), np.nan)
    return vector if abs(vector.sum() - 1.0) < 1e-3 else np.full(len(LEARNING_STATES), np.nan)


class EmotionScorer:
    """The callable class Ray Data runs: the version loads once per actor."""

    def __init__(self, *, registry_dir: str, version: str, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        registry = ModelRegistry(registry_dir)
        self.version = registry.resolve_version(MODEL_NAME, version)
        self.known = set(registry.versions(MODEL_NAME))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = EmotionClassifier.from_artifact(
            registry.load(MODEL_NAME, self.version).path, device=device
        )

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = batch["message"].fillna("").astype(str).tolist()
        # The batched forward pass and the vectorised state distribution, no per-row objects.
        _, raw_states = self.classifier.predict_states(texts)
        states = calibrate_states(raw_states, self.classifier.state_temperature)  # [n, 8]
        best = states.argmax(axis=1)
        served = np.stack(
            [served_distribution(j) for j in batch["emotion_json"]]
            or [np.zeros((0, len(LEARNING_STATES)))]
        ).reshape(-1, len(LEARNING_STATES))
        served_version = batch["version_emotion"].astype(object)
        comparable = (
            served_version.isin(self.known).to_numpy()
            & ~np.isnan(served).any(axis=1)
            & batch["emotion_state"].isin(LEARNING_STATES).to_numpy()
        )
        out = pd.DataFrame(
            {
                "turn_id": batch["turn_id"].to_numpy(),
                "learner_id": batch["learner_id"].to_numpy(),
                "ts": batch["ts"].to_numpy(),
                "version": self.version,
                "state": np.asarray(LEARNING_STATES, dtype=object)[best],
                "confidence": states[np.arange(len(states)), best],
            }
        )
        for j, column in enumerate(STATE_COLUMNS):
            out[column] = states[:, j]
        out["served_version"] = served_version.to_numpy()
        out["served_state"] = batch["emotion_state"].to_numpy()
        for j, column in enumerate(SERVED_COLUMNS):
            out[column] = served[:, j]
        out["comparable"] = comparable
        # Total variation between the two distributions of this turn (NaN when not comparable).
        out["shift_tv"] = np.where(comparable, 0.5 * np.abs(states - served).sum(axis=1), np.nan)
        return out[OUTPUT_COLUMNS]


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        keep = a > 0
        return float(np.sum(a[keep] * np.log2(a[keep] / b[keep])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def compare(scored: pd.DataFrame) -> dict[str, Any]:
    """Candidate vs served on the comparable turns: agreement (overall and per served state),
    the state frequencies and mean distributions of both, and how far they moved."""
    rows = scored[scored["comparable"].astype(bool)]
    n = len(rows)
    agree = (rows["state"] == rows["served_state"]).to_numpy()
    per_state = {}
    for state in LEARNING_STATES:
        mask = (rows["served_state"] == state).to_numpy()
        per_state[state] = {
            "served_turns": int(mask.sum()),
            "agreement": float(agree[mask].mean()) if mask.any() else None,
        }
    freq = {
        name: rows[column].value_counts(normalize=True).reindex(LEARNING_STATES, fill_value=0.0)
        for name, column in (("candidate", "state"), ("served", "served_state"))
    }
    candidate_mean = rows[STATE_COLUMNS].to_numpy(float).mean(axis=0)
    served_mean = rows[SERVED_COLUMNS].to_numpy(float).mean(axis=0)
    return {
        "comparable_turns": n,
        "not_comparable_turns": int(len(scored) - n),
        "served_versions": rows["served_version"].value_counts().to_dict(),
        "agreement": float(agree.mean()) if n else float("nan"),
        "per_state": per_state,
        "state_frequency": {k: v.round(4).to_dict() for k, v in freq.items()},
        "state_frequency_tv": float(0.5 * np.abs(freq["candidate"] - freq["served"]).sum()),
        "mean_distribution_js_bits": js_divergence(candidate_mean, served_mean)
        if n
        else float("nan"),
        "mean_turn_tv": float(rows["shift_tv"].mean()) if n else float("nan"),
    }


# -- the job's parts (pipelines.batch_score) ---------------------------------------------------
Scorer = EmotionScorer
# Texts per call: large enough that the per-call overhead (Ray Data's batch hand-over, the
# DataFrame) is small beside the forward passes (64 texts each, length-sorted inside the call).
DEFAULT_BATCH_SIZE = 256


def batch_size(requested: int) -> int:
    return requested or DEFAULT_BATCH_SIZE


def scorer_kwargs(registry_dir: str, version: str, champion: str) -> dict[str, Any]:
    return {"registry_dir": registry_dir, "version": version}


def blocks(requested: int, concurrency: int) -> int:
    return requested or 4 * concurrency


def dataset(export: Path, *, blocks: int, distributed_sort: bool = False):
    """The turns in ``blocks`` blocks of about equal size (turns are scored one by one, so
    nothing needs grouping: ``distributed_sort`` is difficulty's), and what the report should
    know of how.

    Up to ``DRIVER_MAX_TURNS`` turns the driver reads the few columns needed (pyarrow) and hands
    Ray Data the blocks as cut (``from_blocks``): Ray Data's own read lists and reads the files
    in tasks, each waiting for a fresh worker process (measured: scoring began 17 s into a job
    whose scoring took 9 s). Past it, Ray Data reads the export itself."""
    import ray.data

    rows = input_rows(export)
    if rows > DRIVER_MAX_TURNS:
        turns = ray.data.read_parquet(str(export / "turns"), override_num_blocks=blocks)
        # Small day files are read as one block, and a block goes to one actor whole: split it
        # so that every actor has work (measured: 1 of 2 actors busy without this).
        notes = {"grouping": f"none; read by Ray Data ({rows} turns > {DRIVER_MAX_TURNS})"}
        return turns.select_columns(INPUT_COLUMNS).repartition(blocks), notes
    started = time.perf_counter()
    table = pads.dataset(export / "turns", format="parquet", partitioning="hive").to_table(
        columns=INPUT_COLUMNS
    )
    size = -(-table.num_rows // blocks) or 1
    pieces = [table.slice(start, size) for start in range(0, table.num_rows, size)]
    notes = {"grouping": "none; read on the driver", "read_s": time.perf_counter() - started}
    return ray.data.from_blocks(pieces), notes


def raw_input(export: Path) -> pd.DataFrame:
    return (
        pads.dataset(export / "turns", format="parquet", partitioning="hive")
        .to_table(columns=INPUT_COLUMNS)
        .to_pandas()
    )


def input_rows(export: Path) -> int:
    return pads.dataset(export / "turns", format="parquet", partitioning="hive").count_rows()


def validate(scored: pd.DataFrame, input_rows: int) -> None:
    if len(scored) != input_rows or not scored["turn_id"].is_unique:
        raise RuntimeError(f"{len(scored)} scored rows for {input_rows} turns, or a turn twice")


def raw_score(scorer: EmotionScorer, frame: pd.DataFrame, size: int) -> pd.DataFrame:
    return pd.concat([scorer(frame.iloc[lo : lo + size]) for lo in range(0, len(frame), size)])


@dataclass(frozen=True)
class Thresholds:
    """The gate. Measured on the synthetic export (1449 comparable turns, all served by v4;
    README_part.md): the shipped v3 and v2 (v4 without its learner-state head) against v4:
    agreement 0.655, state-frequency TV 0.215, JS 0.043 / 0.038 bits, per-turn TV 0.35 / 0.37;
    v1 (the frozen encoder): 0.557, 0.159, 0.017, 0.50; v4 against itself: 1, 0, 0, 0. Each
    threshold lies about halfway between "the same model" and the smallest behaviour change
    shipped (v3 -> v4, which went out only after a labelled evaluation), so a recalibration or
    a same-recipe retrain passes and a changed decision rule goes to a labelled evaluation
    (pipelines.emotion.evaluate_learning_states) before any canary."""

    min_turns: float = 200  # the agreement's s.e. is then <= 0.035
    min_agreement: float = 0.80
    max_state_frequency_tv: float = 0.10
    max_js_bits: float = 0.02
    max_mean_turn_tv: float = 0.20


def checks(comparison: dict[str, Any], t: Thresholds, *, rows: int) -> list[Check]:
    return [
        Check("comparable_turns", comparison["comparable_turns"], ">=", t.min_turns,
              "enough turns for the agreement's s.e. to be <= 0.035"),
        Check("agreement", comparison["agreement"], ">=", t.min_agreement,
              "v3 vs v4: 0.655; same model: 1"),
        Check("state_frequency_tv", comparison["state_frequency_tv"], "<=",
              t.max_state_frequency_tv, "v3 vs v4: 0.215; same model: 0"),
        Check("mean_distribution_js_bits", comparison["mean_distribution_js_bits"], "<=",
              t.max_js_bits, "v3 vs v4: 0.043; same model: 0"),
        Check("mean_turn_tv", comparison["mean_turn_tv"], "<=", t.max_mean_turn_tv,
              "v3 vs v4: 0.35; v1 vs v4: 0.50; same model: 0"),
    ]  # fmt: skip


def markdown(comparison: dict[str, Any]) -> list[str]:
    freq = comparison["state_frequency"]
    lines = [
        f"Comparable turns: {comparison['comparable_turns']} (not comparable, the served "
        f"stage fell back: {comparison['not_comparable_turns']}); served versions "
        f"{comparison['served_versions']}. Mean per-turn total variation "
        f"{comparison['mean_turn_tv']:.4f}.",
        "",
        "| state | served share | candidate share | agreement on turns served as it (n) |",
        "|---|---|---|---|",
    ]
    for state, row in comparison["per_state"].items():
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.3f}"
        lines.append(
            f"| {state} | {freq['served'][state]:.3f} | {freq['candidate'][state]:.3f} | "
            f"{agreement} ({row['served_turns']}) |"
        )
    return lines
