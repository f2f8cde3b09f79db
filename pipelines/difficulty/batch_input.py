"""What the difficulty batch-scoring job reads, and how each learner's rows are brought together
(the input half of ``pipelines.difficulty.batch_score``; no Ray here).

A prediction needs the learner's whole earlier history, and the export is partitioned by day,
so a learner's answers lie in many files. Two ways to bring them together:

* on the driver (the default): the few columns the job needs are read with pyarrow, sorted by
  learner in Arrow, and cut into blocks of whole learners with about equal numbers of answers
  (``whole_learner_blocks``); Ray Data then only maps and writes. At 60,915 answers (121,830
  rows with their turns) this takes 0.3 s, where the distributed sort's read, sample, map and
  reduce tasks (each a worker process to start, on 2 cores) made most of a 65-115 s job. It
  needs the rows in the driver's memory: ~100 bytes a row, so up to ``DRIVER_MAX_ROWS`` rows;
* Ray Data's distributed sort by ``learner_id`` (``--distributed-sort``, and beyond
  ``DRIVER_MAX_ROWS``): a sort range-partitions by key, so a learner's rows never straddle two
  blocks (see ``pipelines.difficulty.batch_score.distributed_dataset``).

Either way ``check_whole_learners`` verifies the scored rows afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

# What the job reads: the answers, and the served version of the turns they belong to.
ANSWER_COLUMNS = ["learner_id", "source_id", "turn_id", "item_id", "skill_id", "correct", "ts"]
TURN_COLUMNS = ["turn_id", "learner_id", "ts", "version_difficulty"]
# Answers and turns as rows of one table, so that one sort by learner brings them together.
ROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()), ("learner_id", pa.string()), ("ts", pa.float64()),
        ("turn_id", pa.string()), ("source_id", pa.string()), ("item_id", pa.string()),
        ("skill_id", pa.string()), ("correct", pa.bool_()), ("version_difficulty", pa.string()),
    ]
)  # fmt: skip
TABLES = (("answer", "answers", ANSWER_COLUMNS), ("turn", "turns", TURN_COLUMNS))
# Answers plus turns the driver sorts itself: ~100 bytes a row in Arrow, so ~0.5 GB at most.
DRIVER_MAX_ROWS = 5_000_000


def as_rows(table: pa.Table, kind: str) -> pa.Table:
    """An answers or turns table in ``ROW_SCHEMA`` (what the other kind has is null)."""
    columns = {
        field.name: table[field.name].cast(field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in ROW_SCHEMA
    }
    columns["kind"] = pa.array([kind] * len(table), pa.string())
    return pa.table(columns, schema=ROW_SCHEMA)


def table_dataset(export: Path, name: str) -> pads.Dataset:
    return pads.dataset(export / name, format="parquet", partitioning="hive")


def count_rows(export: Path) -> int:
    """Answers plus turns, from the Parquet footers (nothing else is read)."""
    return sum(table_dataset(export, name).count_rows() for _, name, _ in TABLES)


def read_rows(export: Path) -> pa.Table:
    """The export's answers and turns in ``ROW_SCHEMA``, in no particular order."""
    return pa.concat_tables(
        as_rows(table_dataset(export, name).to_table(columns=columns), kind)
        for kind, name, columns in TABLES
    )


def by_learner(rows: pa.Table) -> pa.Table:
    """The rows with each learner's together (the scorer orders a learner's answers itself)."""
    return rows.sort_by("learner_id")


def block_cuts(learner_ids: pa.ChunkedArray | pa.Array, weights: np.ndarray, blocks: int) -> list:
    """Row offsets ``[0, ..., n]`` that cut rows sorted by learner into at most ``blocks``
    pieces of whole learners, each piece's ``weights`` sum as near the total / ``blocks`` as
    learner boundaries allow (a learner larger than a share makes a piece of its own)."""
    n = len(learner_ids)
    if n == 0:
        return [0, 0]
    ids = pa.chunked_array([learner_ids]) if isinstance(learner_ids, pa.Array) else learner_ids
    # Where a new learner starts: row 0 and every row whose id differs from the row above.
    changed = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    bounds = np.concatenate([[0], np.flatnonzero(changed) + 1, [n]])
    cumulative = np.concatenate([[0.0], np.cumsum(weights, dtype=float)])[bounds]
    targets = cumulative[-1] * np.arange(1, blocks) / blocks
    # The learner boundary whose cumulative weight is nearest each target.
    right = np.clip(np.searchsorted(cumulative, targets), 1, len(bounds) - 1)
    nearer_left = targets - cumulative[right - 1] < cumulative[right] - targets
    picked = np.where(nearer_left, right - 1, right)
    return sorted({0, n, *(int(b) for b in bounds[picked])})


def whole_learner_blocks(rows: pa.Table, blocks: int) -> list[pa.Table]:
    """Rows sorted by learner (``by_learner``) cut into at most ``blocks`` tables of whole
    learners with about equal numbers of answers (the scoring work; turns cost nearly none)."""
    weights = pc.equal(rows["kind"], "answer").to_numpy(zero_copy_only=False).astype(float)
    cuts = block_cuts(rows["learner_id"], weights, max(1, blocks))
    return [rows.slice(lo, hi - lo) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]
