"""Scoring every learner of a store export for risk (a Ray Data job).

Reads the export's ``answers`` and ``turns`` tables (Parquet, hive-partitioned by day; the
layout of ``make export``), puts both into one stream of events, groups it by learner and scores
each group with ``models.difficulty.risk.assess``: the same feature code as the evaluation.
Writes ``OUT/at_risk.parquet`` (one row per learner, riskiest first) and, with a store, the
latest risk per learner into it (``TutorStore.put_learner_risks``, keyed by learner_id, the
newest run standing), which ``GET /v1/learners/{id}`` serves. The learner ids are the store's
(tenant-prefixed, "T/ada"), so each tenant's learners keep their own scores.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.common.registry import ModelRegistry
from models.difficulty.loader import artifact_skill_names
from models.difficulty.risk import REGISTRY_NAME, RiskModel, assess, reasons_as_dicts
from models.difficulty.risk_features import Answer, TurnObservation
from store import LearnerRiskRecord, open_store

log = logging.getLogger("pipelines.difficulty.at_risk")
OUTPUT_FILE = "at_risk.parquet"
STORE_BATCH = 500
TABLES = {"answers": "answer", "turns": "turn"}  # export table -> event kind

# One stream of events per learner: an answer (kind "answer") or a turn (kind "turn").
EVENT_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()),
        ("kind", pa.string()),
        ("ts", pa.float64()),
        ("item_id", pa.string()),
        ("skill_id", pa.string()),
        ("correct", pa.bool_()),
        ("emotion_state", pa.string()),
        ("emotion_json", pa.string()),
    ]
)
REASON_TYPE = pa.struct(
    [("code", pa.string()), ("kind", pa.string()), ("text", pa.string()), ("weight", pa.float64())]
)
OUTPUT_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()),
        ("risk", pa.float64()),
        ("disengagement", pa.float64()),
        ("reasons", pa.list_(REASON_TYPE)),
        ("answers", pa.int64()),
        ("turns", pa.int64()),
        ("scored_at", pa.float64()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
    ]
)


def _events(kind: str) -> Callable[[pa.Table], pa.Table]:
    def convert(batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        columns = {
            name: batch.column(name) if name in batch.column_names else pa.nulls(n, field.type)
            for name, field in zip(EVENT_SCHEMA.names, EVENT_SCHEMA, strict=True)
            if name != "kind"
        }
        columns["kind"] = pa.array([kind] * n, pa.string())
        return pa.table({name: columns[name] for name in EVENT_SCHEMA.names}).cast(EVENT_SCHEMA)

    return convert


def _states(emotion_json: Any) -> Mapping[str, float] | None:
    if not isinstance(emotion_json, str) or not emotion_json:
        return None
    try:
        states = json.loads(emotion_json).get("states")
    except (ValueError, AttributeError):
        return None
    return states if isinstance(states, dict) else None


class ScoreLearners:
    """Scores one learner's events (all of them: a group of ``map_groups``)."""

    def __init__(
        self,
        model: dict[str, Any],
        *,
        model_version: str,
        skill_names: dict[str, str],
        scored_at: float,
        run_id: str,
    ) -> None:
        self.model = RiskModel.from_dict(model)
        self.model_version = model_version
        self.skill_names = skill_names
        self.scored_at = scored_at
        self.run_id = run_id

    def skill_name(self, skill_id: str) -> str:
        name = self.skill_names.get(skill_id)
        return f"'{name}'" if name else f"skill {skill_id}"

    def __call__(self, group: pd.DataFrame) -> pd.DataFrame:
        # Stable sort: answers of one ts keep the export's order.
        group = group.sort_values("ts", kind="stable")
        answers = group[group["kind"] == "answer"]
        turns = group[group["kind"] == "turn"]
        result = assess(
            self.model,
            [
                Answer(skill_id=str(s), correct=bool(c), item_id=str(i), ts=float(t))
                for s, c, i, t in zip(
                    answers["skill_id"],
                    answers["correct"],
                    answers["item_id"],
                    answers["ts"],
                    strict=True,
                )
            ],  # fmt: skip
            [
                TurnObservation(ts=float(t), emotion_state=e, states=_states(j))
                for t, e, j in zip(
                    turns["ts"], turns["emotion_state"], turns["emotion_json"], strict=True
                )
            ],
            now=self.scored_at,
            skill_name=self.skill_name,
        )
        return pd.DataFrame(
            {
                "learner_id": [group["learner_id"].iloc[0]],
                "risk": [np.nan if result.risk is None else result.risk],
                "disengagement": [np.nan if result.disengagement is None else result.disengagement],
                "reasons": [reasons_as_dicts(result.reasons)],
                "answers": [result.answers],
                "turns": [result.turns],
                "scored_at": [self.scored_at],
                "model_version": [self.model_version],
                "run_id": [self.run_id],
            }
        )


def score_group(group: pd.DataFrame, *, config: dict[str, Any]) -> pd.DataFrame:
    """``map_groups``' function. Tasks, not an actor pool: the model is a few dozen numbers,
    rebuilt per group in microseconds, and an actor would hold a CPU that the read and shuffle
    tasks need on a one-CPU cluster (the job deadlocked so)."""
    return ScoreLearners(**config)(group)


def load_risk_model(version: str, registry: ModelRegistry | None = None) -> tuple[RiskModel, str]:
    registry = registry or ModelRegistry()
    artifact = registry.load(REGISTRY_NAME, version)
    return RiskModel.load(artifact.path), f"{REGISTRY_NAME}/{artifact.metadata.version}"


def default_skill_names(registry: ModelRegistry | None = None) -> dict[str, str]:
    """The served difficulty model's skill names (the newest version's), for the reasons."""
    registry = registry or ModelRegistry()
    artifact = registry.load("difficulty", "latest")
    return artifact_skill_names(artifact.path)


def score_export(
    export: Path,
    out: Path,
    *,
    model: RiskModel,
    model_version: str,
    skill_names: dict[str, str] | None = None,
    store_uri: str | None = None,
    now: float | None = None,
    partitions: int = 16,
) -> dict[str, Any]:
    """Score every learner of ``export``; returns a summary (also logged). ``partitions``: of
    the shuffle by learner (Ray's default, 200, is slow on a small export)."""
    import ray

    started = time.perf_counter()
    scored_at = time.time() if now is None else now
    run_id = f"at-risk-{int(scored_at)}-{uuid.uuid4().hex[:8]}"
    tables = {t: export / t for t in TABLES if (export / t).is_dir()}
    if not tables:
        raise FileNotFoundError(f"{export} has neither answers/ nor turns/ (see make export)")
    parts = [
        ray.data.read_parquet(str(path)).map_batches(_events(TABLES[t]), batch_format="pyarrow")
        for t, path in tables.items()
    ]
    events = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    scored = events.groupby("learner_id", num_partitions=partitions).map_groups(
        score_group,
        fn_kwargs={
            "config": {
                "model": model.to_dict(),
                "model_version": model_version,
                "skill_names": skill_names or {},
                "scored_at": scored_at,
                "run_id": run_id,
            }
        },
        batch_format="pandas",
    )
    frame = scored.to_pandas()
    frame = frame.sort_values(["risk", "learner_id"], ascending=[False, True], na_position="last")
    table = pa.Table.from_pandas(frame, schema=OUTPUT_SCHEMA, preserve_index=False)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / OUTPUT_FILE)
    written = _store(store_uri, table.to_pylist()) if store_uri else None
    summary = {
        "learners": table.num_rows,
        "scored_with_answers": int(frame["risk"].notna().sum()),
        "with_turns": int(frame["disengagement"].notna().sum()),
        "risk_above_0_5": int((frame["risk"] > 0.5).sum()),
        "store_records_written": written,
        "scored_at": scored_at,
        "run_id": run_id,
        "model_version": model_version,
        "output": str(out / OUTPUT_FILE),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("at-risk scoring: %s", summary)
    return summary


def _store(uri: str, rows: list[dict[str, Any]]) -> int:
    records = [
        LearnerRiskRecord(
            **{k: row[k] for k in LearnerRiskRecord.model_fields if k in row},
        )
        for row in rows
    ]
    with open_store(uri) as store:
        return sum(
            store.put_learner_risks(records[i : i + STORE_BATCH])
            for i in range(0, len(records), STORE_BATCH)
        )
