"""The difficulty job's grouping on the driver, without Ray: rows sorted by learner and cut into
blocks of whole learners with about equal numbers of answers."""

import numpy as np
import pyarrow as pa
import pytest

from pipelines.difficulty.batch_input import (
    ROW_SCHEMA,
    block_cuts,
    by_learner,
    count_rows,
    read_rows,
    whole_learner_blocks,
)
from tests.support.tiny_export import write_tiny_export


def rows(answers_per_learner: dict[str, int], seed: int = 0) -> pa.Table:
    """Each learner's answers, each with its turn, shuffled as an export's files leave them."""
    kinds, learners = [], []
    for learner, n in answers_per_learner.items():
        kinds += ["answer"] * n + ["turn"] * n
        learners += [learner] * (2 * n)
    order = np.random.default_rng(seed).permutation(len(kinds))
    columns = {f.name: pa.nulls(len(kinds), f.type) for f in ROW_SCHEMA}
    columns["kind"] = pa.array(np.array(kinds)[order])
    columns["learner_id"] = pa.array(np.array(learners)[order])
    return pa.table(columns, schema=ROW_SCHEMA)


def learners_of(block: pa.Table) -> set[str]:
    return set(block["learner_id"].to_pylist())


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 7, 50])
def test_blocks_hold_whole_learners_and_every_row_once(blocks):
    sizes = {f"l{i:02d}": n for i, n in enumerate([5, 1, 30, 8, 8, 2, 17, 4, 9, 11])}
    table = by_learner(rows(sizes))
    pieces = whole_learner_blocks(table, blocks)
    assert 1 <= len(pieces) <= min(blocks, len(sizes))
    assert sum(len(p) for p in pieces) == len(table)
    seen = [learners_of(p) for p in pieces]
    assert sum(len(s) for s in seen) == len(sizes)  # no learner in two blocks
    for piece in pieces:
        for learner in learners_of(piece):
            assert piece["learner_id"].to_pylist().count(learner) == 2 * sizes[learner]


def test_blocks_carry_about_equal_answers():
    sizes = {f"l{i:03d}": n for i, n in enumerate(np.random.default_rng(1).integers(1, 60, 300))}
    pieces = whole_learner_blocks(by_learner(rows(sizes)), 4)
    answers = [p["kind"].to_pylist().count("answer") for p in pieces]
    share = sum(sizes.values()) / 4
    # A cut lands on the learner boundary nearest its target: off by at most one learner.
    assert len(answers) == 4 and all(abs(a - share) <= 2 * max(sizes.values()) for a in answers)


def test_a_learner_bigger_than_a_share_makes_a_block_of_its_own():
    cuts = block_cuts(pa.array(["a"] * 2 + ["b"] * 90 + ["c"] * 4 + ["d"] * 4), np.ones(100), 4)
    assert cuts[0] == 0 and cuts[-1] == 100 and 2 in cuts and 92 in cuts
    assert block_cuts(pa.array([], pa.string()), np.ones(0), 3) == [0, 0]
    assert block_cuts(pa.array(["a"] * 5), np.ones(5), 3) == [0, 5]


def test_the_driver_reads_answers_and_turns_of_an_export(tmp_path):
    export = write_tiny_export(tmp_path, learners=3, answers=4)
    table = read_rows(export)
    assert table.schema == ROW_SCHEMA and count_rows(export) == len(table) == 24
    assert table["kind"].to_pylist().count("answer") == 12
    pieces = whole_learner_blocks(by_learner(table), 2)
    assert [len(learners_of(p)) for p in pieces] in ([1, 2], [2, 1])
