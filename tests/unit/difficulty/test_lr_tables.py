"""The LR tracer's item tables: the Q-matrix, smoothed item means, leaving a learner out, and the
features that read them (Q-matrix columns, residual ability, Elo).

Tolerance 1e-12: float64 values computed by the same arithmetic in another order.
"""

from __future__ import annotations

import pytest

from models.difficulty.data import StudentSequence, Vocabulary
from models.difficulty.lr_features import FeatureSpec, LearnerState, features_matrix
from models.difficulty.lr_tables import ItemTables

# s: item b is a three-skill problem (one attempt, one response); t: c answered wrong.
S = StudentSequence("s", ["a", "b", "b", "b", "c"], ["1", "1", "2", "3", "2"], [1, 0, 0, 0, 1])
T = StudentSequence("t", ["c", "a"], ["2", "1"], [0, 1])
K = 5.0


def test_tables_count_an_attempt_once_and_smooth_towards_the_skill_mean() -> None:
    tables = ItemTables.build([S, T], smoothing=K)
    assert tables.item_skills["b"] == ("1", "2", "3")
    assert tables.item_attempts == {"a": 2, "b": 1, "c": 2}
    skill2 = 1 / 3  # rows of skill 2: b (0), c (1), c (0)
    assert tables.expected("c", "2") == pytest.approx((1 + K * skill2) / (2 + K), abs=1e-12)
    assert tables.expected("new", "2") == pytest.approx(skill2, abs=1e-12)
    assert tables.expected("new", "404") == pytest.approx(tables.global_correct, abs=1e-12)
    assert tables.skills_of("new", "7") == ("7",)
    assert ItemTables.from_dict(tables.to_dict()) == tables
    no_items = ItemTables.build([S, T], with_items=False)
    assert no_items.item_skills == {} and no_items.skill_correct == tables.skill_correct


def test_leaving_a_learner_out_removes_only_their_attempts() -> None:
    tables = ItemTables.build([S, T], smoothing=K)
    without_s = tables.leave_out(S)
    assert without_s.expected("c", "2") == pytest.approx((0 + K / 3) / (1 + K), abs=1e-12)
    assert without_s.expected("b", "1") == pytest.approx(tables.skill_correct["1"], abs=1e-12)
    assert tables.expected("c", "2") == pytest.approx((1 + K / 3) / (2 + K), abs=1e-12)  # kept
    vocab = Vocabulary.build([S, T])
    spec = FeatureSpec(len(vocab.items), vocab.num_skills, groups=("ability", "elo"))
    loo = features_matrix(spec, vocab, [S], tables, leave_out=True).toarray()
    assert loo == pytest.approx(features_matrix(spec, vocab, [S], without_s).toarray(), abs=1e-12)


def test_qmatrix_rows_of_a_multi_skill_item_read_all_its_skills() -> None:
    tables = ItemTables.build([S, T])
    vocab = Vocabulary.build([S, T])
    groups = ("item", "skill", "skill_counts", "elo")
    q = FeatureSpec(len(vocab.items), vocab.num_skills, groups=groups, qmatrix=True)
    state = LearnerState(q, tables)
    for item, skill, correct in zip(S.item_ids, S.skill_ids, S.correct, strict=True):
        state.add(item, skill, correct)
    state = state.closed()
    rows = [state.row(vocab, "b", skill) for skill in ("1", "2", "3")]
    assert rows[0] == rows[1] == rows[2]  # one problem, one prediction
    skill_columns = {c - q.offset("skill") for c in rows[0][0]} & set(range(vocab.num_skills))
    assert len(skill_columns) == 3
    plain = FeatureSpec(len(vocab.items), vocab.num_skills, groups=groups)
    single = LearnerState(plain, tables)
    single.skills, single.attempts, single.theta = state.skills, state.attempts, state.theta
    assert single.row(vocab, "b", "1") != rows[0]  # without the Q-matrix: the row's skill only
    assert state.row(vocab, "unseen", "2") == single.row(vocab, "unseen", "2")  # falls back
