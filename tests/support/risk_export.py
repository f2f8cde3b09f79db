"""A tiny synthetic export in ``make export``'s layout (answers and turns, hive-partitioned by
day), for the at-risk job's tests until the export part writes real ones."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ANSWERS = pa.schema(
    [
        ("learner_id", pa.string()),
        ("source_id", pa.string()),
        ("turn_id", pa.string()),
        ("item_id", pa.string()),
        ("skill_id", pa.string()),
        ("correct", pa.bool_()),
        ("ts", pa.float64()),
    ]
)
# The turns columns the at-risk job reads, plus a few of the contract's others.
TURNS = pa.schema(
    [
        ("turn_id", pa.string()),
        ("learner_id", pa.string()),
        ("session_id", pa.string()),
        ("ts", pa.float64()),
        ("request_id", pa.string()),
        ("message", pa.string()),
        ("emotion_state", pa.string()),
        ("emotion_confidence", pa.float64()),
        ("emotion_json", pa.string()),
        ("strategy", pa.string()),
    ]
)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _write(out: Path, table: str, schema: pa.Schema, rows: Sequence[dict]) -> None:
    by_day: dict[str, list[dict]] = {}
    for row in rows:
        by_day.setdefault(_day(row["ts"]), []).append(row)
    for day, part in by_day.items():
        folder = out / table / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part, schema=schema), folder / "part-0.parquet")


def write_export(
    out: Path,
    answers: dict[str, Sequence[tuple[str, bool, float]]],
    turns: dict[str, Sequence[tuple[float, str]]],
) -> Path:
    """``answers``: learner -> (skill_id, correct, ts); ``turns``: learner -> (ts, state)."""
    _write(
        out,
        "answers",
        ANSWERS,
        [
            {
                "learner_id": learner,
                "source_id": f"{learner}-t{i}:answer",
                "turn_id": f"{learner}-t{i}",
                "item_id": f"item-{skill}-{i}",
                "skill_id": skill,
                "correct": correct,
                "ts": ts,
            }
            for learner, rows in answers.items()
            for i, (skill, correct, ts) in enumerate(rows)
        ],
    )
    _write(
        out,
        "turns",
        TURNS,
        [
            {
                "turn_id": f"{learner}-t{i}",
                "learner_id": learner,
                "session_id": None,
                "ts": ts,
                "request_id": f"r-{learner}-{i}",
                "message": "(synthetic)",
                "emotion_state": state,
                "emotion_confidence": 0.9,
                "emotion_json": json.dumps({"state": state, "states": {state: 0.9}}),
                "strategy": "hint",
            }
            for learner, rows in turns.items()
            for i, (ts, state) in enumerate(rows)
        ],
    )
    (out / "_export_state.json").write_text("{}\n")
    return out
