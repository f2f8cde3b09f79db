"""The history a turn sends the difficulty model: past the stored limit it still grows by the
new answer from one turn to the next, so the Difficulty replica's caches keep working."""

import pytest

from deployments.schemas import MAX_HISTORY
from deployments.tutoring.history import history_window, learner_history, load_learner
from models.common.registry import ModelRegistry
from models.difficulty.loader import load_tracer
from models.difficulty.lr_tracer import LRTracer
from models.difficulty.tracer_api import Interaction, as_interactions, window_start
from store import AnswerRecord
from store.sqlite_store import SQLiteStore

WHOLE = [(str(i), str(i % 7), i % 3 != 0) for i in range(2 * MAX_HISTORY + 700)]


def sent(total: int) -> list[tuple]:
    """What a turn sends after ``total`` answers: the window of the newest MAX_HISTORY."""
    return history_window(WHOLE[max(0, total - MAX_HISTORY) : total], total)


def test_the_window_grows_by_each_answer_and_moves_only_every_half_limit():
    moves = []
    for total in range(1, len(WHOLE) + 1):
        rows, before = sent(total), sent(total - 1)
        assert len(rows) <= MAX_HISTORY
        assert rows[-1] == WHOLE[total - 1]
        if total > MAX_HISTORY:
            assert len(rows) >= MAX_HISTORY // 2
        if rows != before + [WHOLE[total - 1]]:
            moves.append(total)
    # The newest 1,000 would have moved on every turn past the thousandth answer.
    assert moves == [1001, 1501, 2001, 2501]


@pytest.mark.parametrize("window", [200, 1000])
def test_each_tracer_reads_what_it_would_read_of_the_whole_history(window):
    """The shipped tracers' windows (200 rows, and 1,000 for the feature model) see exactly
    the rows their own window rule takes from every answer the learner has given."""
    for total in range(0, len(WHOLE) + 1, 37):
        rows = sent(total)
        assert rows[window_start(len(rows), window) :] == WHOLE[window_start(total, window) : total]


def _store_with_answers(tmp_path, count: int) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "t.db")
    for i, (item, skill, correct) in enumerate(WHOLE[:count]):
        store.add_answer(AnswerRecord(learner_id="heavy", source_id=f"s{i}", item_id=item,
                                      skill_id=skill, correct=correct, ts=float(i)))  # fmt: skip
    return store


def test_a_turn_past_the_limit_loads_the_window_with_its_answer(tmp_path):
    store = _store_with_answers(tmp_path, 1200)
    item, skill, correct = WHOLE[1200]
    answer = AnswerRecord(learner_id="heavy", source_id="t:answer", item_id=item,
                          skill_id=skill, correct=correct, ts=1200.0)  # fmt: skip
    _, answered, rows, _ = load_learner(store, "heavy", answer, now=1200.0)
    assert answered
    assert rows == WHOLE[500:1201]  # window_start(1201, 1000) == 500


async def test_posted_answers_count_after_the_stored_ones(tmp_path):
    store = _store_with_answers(tmp_path, 999)
    posted = [Interaction(*row) for row in WHOLE[999:1003]]
    rows = await learner_history(store, "heavy", posted)
    assert rows == WHOLE[500:1003]
    assert await learner_history(store, None, posted) == WHOLE[999:1003]


def test_the_served_tracer_extends_its_caches_from_one_turn_to_the_next():
    """The shipped champion (v5: DKT and the feature model, stacked): the second turn reuses
    every row of the first's window in both members."""
    tracer = load_tracer(ModelRegistry().load("difficulty", "v5").path)
    members = tracer.members.values()
    caches = [m.state_cache if isinstance(m, LRTracer) else m.encoding_cache for m in members]
    candidates = [("2000", "9"), ("2001", "15")]
    tracer.predict(as_interactions(sent(1650)), candidates)
    reused = [cache.stats()["rows_reused"] for cache in caches]
    tracer.predict(as_interactions(sent(1651)), candidates)
    grown = [cache.stats()["rows_reused"] - r for cache, r in zip(caches, reused, strict=True)]
    # DKT: every row of its window (rows 1,500-1,649); the feature model: all 650 (from 1,000).
    assert grown == [150, 650]
