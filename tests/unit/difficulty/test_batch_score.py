"""Difficulty batch scoring without Ray: the batched trace equals serving's, predictions are
leak-free, each answer is compared with the version that served it."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.difficulty.data import StudentSequence
from models.difficulty.tracer import Interaction, KnowledgeTracer
from pipelines.batch_score import verdict
from pipelines.difficulty.batch_input import ANSWER_COLUMNS, TURN_COLUMNS, as_rows
from pipelines.difficulty.batch_score import Thresholds, check_whole_learners, checks, compare
from pipelines.difficulty.batch_scorer import DifficultyScorer, trace_batched, trace_windows

ITEMS = [("7410", "37"), ("7410", "54"), ("10076", "54"), ("10091", "54"), ("999999", "nope")]


@pytest.fixture(scope="module")
def scorer():
    return DifficultyScorer(registry_dir=str(DEFAULT_REGISTRY_ROOT), version="v2", champion="v2")


def sequence(n: int, seed: int) -> StudentSequence:
    rng = np.random.default_rng(seed)
    picks = [ITEMS[i] for i in rng.integers(0, len(ITEMS), n)]
    return StudentSequence(
        student=f"s{seed}",
        item_ids=[i for i, _ in picks],
        skill_ids=[s for _, s in picks],
        correct=[int(c) for c in rng.random(n) < 0.6],
    )


def block(sequences: list[StudentSequence], versions: dict[str, str | None]) -> pd.DataFrame:
    """Answers (one turn each, whose served version is ``versions[learner]``) as the job's rows."""
    answers, turns = [], []
    for seq in sequences:
        for t, (item, skill, c) in enumerate(
            zip(seq.item_ids, seq.skill_ids, seq.correct, strict=True)
        ):
            turn_id = f"{seq.student}-t{t}"
            answers.append(
                {"learner_id": seq.student, "source_id": f"{turn_id}:answer",
                 "turn_id": turn_id, "item_id": item, "skill_id": skill,
                 "correct": bool(c), "ts": 100.0 + t}
            )  # fmt: skip
            turns.append(
                {"turn_id": turn_id, "learner_id": seq.student, "ts": 99.0 + t,
                 "version_difficulty": versions[seq.student]}
            )  # fmt: skip
    rows = pa.concat_tables(
        [
            as_rows(pa.Table.from_pylist(answers).select(ANSWER_COLUMNS), "answer"),
            as_rows(pa.Table.from_pylist(turns).select(TURN_COLUMNS), "turn"),
        ]
    )
    return rows.to_pandas().sample(frac=1.0, random_state=0)  # the job's order is no order


def test_trace_windows_slide_like_serving():
    assert trace_windows(["a"] * 3, 200) == [(0, 0, 3)]
    items = [str(i) for i in range(450)]
    # Window 200, stride 100: rows 0-200 from 0, then each next 100 from 100 rows further on.
    expected = [(0, 0, 201), (100, 201, 301), (200, 301, 401), (300, 401, 450)]
    assert trace_windows(items, 200) == expected


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_batched_trace_equals_servings_trace(version):
    tracer = KnowledgeTracer.from_artifact(
        ModelRegistry().load("difficulty", version).path, encoding_cache_size=0
    )
    tracer.max_history = 16  # short windows, so that sliding is exercised on short sequences
    sequences = [sequence(n, seed) for seed, n in enumerate([1, 5, 17, 40, 3])]
    batched = trace_batched(tracer, sequences, batch_size=2)
    for seq, probs in zip(sequences, batched, strict=True):
        rows = zip(seq.item_ids, seq.skill_ids, map(bool, seq.correct), strict=True)
        history = [Interaction(*row) for row in rows]
        expected = [p.p_correct for p in tracer.trace(history)]
        np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_a_prediction_never_changes_when_later_answers_change(scorer):
    seq = sequence(30, seed=1)
    later = [1 - c for c in seq.correct[20:]]
    flipped = StudentSequence(seq.student, seq.item_ids, seq.skill_ids, seq.correct[:20] + later)
    before = scorer(block([seq], {seq.student: "v2"}))
    after = scorer(block([flipped], {seq.student: "v2"}))
    assert list(before["source_id"]) == list(after["source_id"])
    np.testing.assert_allclose(before["p_correct"][:21], after["p_correct"][:21], atol=1e-9)
    assert not np.allclose(before["p_correct"][21:], after["p_correct"][21:])
    # The first answer has no history: its prediction is the population's.
    assert before["position"].tolist() == list(range(30))


def test_each_answer_is_compared_with_the_version_that_served_its_turn(scorer):
    a, b, c = sequence(12, 2), sequence(9, 3), sequence(7, 4)
    out = scorer(block([a, b, c], {a.student: "v1", b.student: "unavailable", c.student: None}))
    assert len(out) == 28 and out["source_id"].is_unique
    served = out.groupby("learner_id")["served_version"].unique()
    assert list(served[a.student]) == ["v1"] and list(served[b.student]) == ["v2"]
    told = out.groupby("learner_id")["served_version_from"].unique()
    assert list(told[a.student]) == ["turn"] and list(told[c.student]) == ["champion"]
    # v1's rows differ from the candidate v2's; v2-served rows are v2's own predictions.
    mine = out[out["learner_id"] == b.student]
    np.testing.assert_allclose(mine["p_correct"], mine["served_p_correct"], atol=1e-9)
    theirs = out[out["learner_id"] == a.student]
    assert not np.allclose(theirs["p_correct"], theirs["served_p_correct"])
    check_whole_learners(out)
    with pytest.raises(RuntimeError, match="split"):
        check_whole_learners(pd.concat([out, out[out["learner_id"] == a.student]]))


def test_the_gate_allows_a_small_auc_drop_and_needs_calibration():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 6000)
    y = rng.random(6000) < p  # calibrated by construction
    served = np.clip(p + rng.normal(0, 0.02, 6000), 0.01, 0.99)
    frame = pd.DataFrame(
        {"correct": y, "p_correct": p, "served_p_correct": served,
         "served_version": "v2", "served_version_from": "turn", "learner_id": "x"}
    )  # fmt: skip
    result = compare(frame)
    assert abs(result["delta"]["auc"]) < 0.01
    assert verdict(checks(result, Thresholds(), rows=6000)) == "pass"
    frame["p_correct"] = 0.5 + (frame["p_correct"] - 0.5) * 0.3  # squashed: ranking kept
    failed = {c.name for c in checks(compare(frame), Thresholds(), rows=6000) if not c.passed}
    assert failed == {"log_loss", "ece"}
    assert verdict(checks(result, Thresholds(), rows=100)) == "fail"
