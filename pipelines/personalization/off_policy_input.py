"""The off-policy job's input: the store's Parquet export, or the simulator's JSON Lines log,
either way as Ray Data rows of EXPORT_SCHEMA (one logged turn with its rewards by source)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

# One logged turn a row, with its rewards by source: the simulator's JSON Lines log, and what
# the store export's turns joined with their rewards become. A key absent from a line is null.
EXPORT_SCHEMA = pa.schema(
    [
        ("turn_id", pa.string()),
        ("learner_id", pa.string()),
        ("ts", pa.float64()),
        ("policy", pa.string()),  # the logging policy's name
        ("strategy", pa.string()),
        ("propensity", pa.float64()),
        ("context", pa.list_(pa.float64())),  # empty when a fallback chose the strategy
        ("reward_explicit", pa.float64()),
        ("reward_answer", pa.float64()),
    ]
)


def export_paths(export: Path) -> list[str]:
    """The JSON Lines files of a simulator log (a file, or a directory of them)."""
    paths = sorted(export.glob("*.jsonl")) if export.is_dir() else [export]
    if not paths or not all(path.is_file() for path in paths):
        raise FileNotFoundError(
            f"no export at {export}: neither a store export (turns/ beside rewards/, "
            "written by make export) nor JSON Lines"
        )
    return [str(path) for path in paths]


def is_store_export(export: Path) -> bool:
    return (export / "turns").is_dir()


# The store export's turn columns this job reads, and the names EXPORT_SCHEMA gives them.
_TURN_COLUMNS = {
    "turn_id": "turn_id",
    "learner_id": "learner_id",
    "ts": "ts",
    "version_personalization": "policy",
    "strategy": "strategy",
    "propensity": "propensity",
    "context": "context",
}


def rewards_by_turn(rewards_dir: Path) -> pd.DataFrame:
    """The export's rewards as one row a turn: turn_id, reward_explicit, reward_answer.

    On the driver: a turn has at most one reward per source, so this is at most two numbers a
    turn, and the job gathers every usable turn on the driver anyway.
    """
    columns = ["turn_id", "reward_explicit", "reward_answer"]
    if not any(rewards_dir.rglob("*.parquet")):
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    table = pads.dataset(rewards_dir, format="parquet", partitioning="hive").to_table(
        columns=["turn_id", "source", "reward"]
    )
    wide = table.to_pandas().pivot(index="turn_id", columns="source", values="reward")
    wide = wide.rename(columns=lambda source: f"reward_{source}").reset_index()
    return wide.reindex(columns=columns)


def attach_rewards(batch: pd.DataFrame, *, rewards: pd.DataFrame) -> pd.DataFrame:
    """A batch of the export's turns as EXPORT_SCHEMA rows: renamed, with their rewards."""
    turns = batch[list(_TURN_COLUMNS)].rename(columns=_TURN_COLUMNS)
    return turns.merge(rewards, on="turn_id", how="left")[EXPORT_SCHEMA.names]


def read_export(export: Path):
    """The export as a Ray dataset of EXPORT_SCHEMA rows (Ray must be initialised)."""
    import ray
    from pyarrow import json as pajson

    if not is_store_export(export):
        return ray.data.read_json(
            export_paths(export), parse_options=pajson.ParseOptions(explicit_schema=EXPORT_SCHEMA)
        )
    if not any((export / "turns").rglob("*.parquet")):
        raise ValueError(f"the export at {export} holds no turns yet")
    rewards = rewards_by_turn(export / "rewards")
    turns = ray.data.read_parquet(str(export / "turns"), columns=list(_TURN_COLUMNS))
    return turns.map_batches(attach_rewards, batch_format="pandas", fn_kwargs={"rewards": rewards})
