"""The logistic-regression tracer: leak-free features, one attempt counted once, trace ==
predict on each prefix, cached == uncached, flags and fallbacks, the artifact, load_tracer.

Tolerances: 1e-12 on float64 values computed by the same arithmetic in another order (a dot
product over the same columns, a sigmoid); 1e-6 after a save/load round trip (the artifact
stores float32 coefficients).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from models.difficulty.data import Priors, StudentSequence, Vocabulary
from models.difficulty.loader import artifact_architecture, load_tracer
from models.difficulty.lr_features import ALL_GROUPS, FeatureSpec, LearnerState, features_matrix
from models.difficulty.lr_tables import ItemTables
from models.difficulty.lr_tracer import LinearModel, LRTracer
from models.difficulty.tracer_api import COLD_START, UNSEEN_ITEM, UNSEEN_SKILL, Interaction

# Item a (skill 1), multi-skill item b (skills 1, 2, 3: one response), c (skill 2), d (skill 3).
ITEMS = ["a", "b", "b", "b", "c", "d"]
SKILLS = ["1", "1", "2", "3", "2", "3"]
CORRECT = [1, 0, 0, 0, 1, 1]


def small_tracer(seed: int = 0, max_history: int = 1000, cache: int = 64) -> LRTracer:
    train = [
        StudentSequence("s", ITEMS, SKILLS, CORRECT),
        StudentSequence("t", ["c", "a", "e"], ["2", "1", "4"], [0, 1, 1]),
    ]
    vocab = Vocabulary.build(train)
    spec = FeatureSpec(num_items=len(vocab.items), num_skills=vocab.num_skills, qmatrix=True)
    rng = np.random.default_rng(seed)
    model = LinearModel(rng.normal(0, 0.5, spec.num_features), 0.3, temperature=1.3)
    return LRTracer(
        spec,
        model,
        vocab,
        Priors.compute(train),
        {"3": "Fractions"},
        ItemTables.build(train),
        max_history=max_history,
        state_cache_size=cache,
    )


def history(correct: list[int]) -> list[Interaction]:
    return [Interaction(i, s, bool(c)) for i, s, c in zip(ITEMS, SKILLS, correct, strict=True)]


def random_history(rng: random.Random, length: int) -> list[Interaction]:
    """Rows over known and unknown items/skills, with multi-row attempts and repeated items."""
    rows: list[Interaction] = []
    while len(rows) < length:
        item = rng.choice(["a", "b", "c", "d", "e", "zz"])
        correct = rng.random() < 0.6
        for skill in rng.sample(["1", "2", "3", "4", "77"], rng.choice([1, 1, 2, 3])):
            rows.append(Interaction(item, skill, correct))
    return rows[:length]


def p(predictions) -> list[float]:
    return [x.p_correct for x in predictions]


def test_rows_of_a_multi_skill_attempt_never_see_its_response() -> None:
    tracer = small_tracer()
    right, wrong = history(CORRECT), history([1, 1, 1, 1, 1, 1])
    # Rows 1-3 are one attempt: their predictions must not move with its response.
    assert p(tracer.trace(right))[:4] == pytest.approx(p(tracer.trace(wrong))[:4], abs=1e-12)
    assert p(tracer.trace(right))[4] != pytest.approx(p(tracer.trace(wrong))[4], abs=1e-6)


def test_an_attempt_counts_once_overall_per_item_and_per_skill() -> None:
    spec = FeatureSpec(num_items=4, num_skills=3)
    state = LearnerState(spec)
    for item, skill, correct in zip(ITEMS, SKILLS, CORRECT, strict=True):
        state.add(item, skill, correct)
    closed = state.closed()
    assert (closed.attempts, closed.successes) == (4, 3)
    assert {k: v[:2] for k, v in closed.skills.items()} == {"1": (2, 1), "2": (2, 1), "3": (2, 1)}
    assert closed.items["b"][:2] == (1, 0)
    assert state.open is not None and state.attempts == 3  # the newest attempt is still open


@pytest.mark.parametrize("max_history", [1000, 8])
def test_trace_equals_predict_on_the_history_before_each_attempt(max_history: int) -> None:
    tracer = small_tracer(max_history=max_history)
    hist = random_history(random.Random(3), 40)
    traced = tracer.trace(hist)
    starts = [0] + [t for t in range(1, len(hist)) if hist[t].item_id != hist[t - 1].item_id]
    for t, row in enumerate(hist):
        start = max(s for s in starts if s <= t)
        [expected] = tracer.predict(hist[:start], [(row.item_id, row.skill_id)])
        assert traced[t].p_correct == pytest.approx(expected.p_correct, abs=1e-12)
        assert traced[t].flags == expected.flags and traced[t].basis == expected.basis


def test_training_matrix_gives_the_served_trace() -> None:
    tracer = small_tracer()
    hist = random_history(random.Random(5), 30)
    seq = StudentSequence(
        "x", [h.item_id for h in hist], [h.skill_id for h in hist], [int(h.correct) for h in hist]
    )
    matrix = features_matrix(tracer.spec, tracer.vocab, [seq], tracer.tables)
    probs = tracer.model.probabilities(matrix)
    served = [t for t, h in zip(tracer.trace(hist), hist, strict=True) if h.skill_id != "77"]
    known = [t for t, h in enumerate(hist) if h.skill_id != "77"]
    assert probs[known] == pytest.approx(p(served), abs=1e-12)


def test_cached_states_give_the_uncached_answers() -> None:
    cached, uncached = small_tracer(cache=8), small_tracer(cache=0)
    hist = random_history(random.Random(7), 60)
    candidates = [("a", "1"), ("b", "2"), ("e", "4"), ("new", "3")]
    for n in [*range(0, 60, 3), 59, 60, 12]:  # grows, then a shorter history again
        got = cached.predict(hist[:n], candidates)
        assert p(got) == pytest.approx(p(uncached.predict(hist[:n], candidates)), abs=1e-12)
    assert cached.describe()["encoding_cache"]["rows_reused"] > 0
    assert uncached.describe()["encoding_cache"] is None


def test_predict_flags_and_fallbacks() -> None:
    tracer = small_tracer()
    cold = tracer.predict([], [("a", "1"), ("new", "1"), ("new", "99")])
    assert [c.flags for c in cold] == [
        (COLD_START,),
        (COLD_START, UNSEEN_ITEM),
        (COLD_START, UNSEEN_ITEM, UNSEEN_SKILL),
    ]
    assert [c.basis for c in cold] == ["population", "population", "global_prior"]
    assert cold[2].p_correct == pytest.approx(tracer.priors.global_prior, abs=1e-12)
    warm = tracer.predict(history(CORRECT), [("a", "1"), ("x", "99"), ("y", "3")])
    assert [w.flags for w in warm] == [(), (UNSEEN_ITEM, UNSEEN_SKILL), (UNSEEN_ITEM,)]
    assert [w.basis for w in warm] == ["model", "global_prior", "model"]
    tracer.priors.skill_priors["99"] = 0.25
    [known_prior] = tracer.predict(history(CORRECT), [("x", "99")])
    assert known_prior.basis == "skill_prior"
    assert known_prior.p_correct == pytest.approx(0.25, abs=1e-12)
    assert all(0.0 < c.p_correct < 1.0 for c in cold + warm)
    assert tracer.predict(history(CORRECT), []) == []


def test_candidates_are_a_fresh_attempt_even_on_the_last_item() -> None:
    tracer = small_tracer()
    hist = history(CORRECT)
    right = tracer.predict(hist, [("d", "3")])[0].p_correct
    wrong = tracer.predict(hist[:-1] + [Interaction("d", "3", False)], [("d", "3")])[0].p_correct
    assert right != pytest.approx(wrong, abs=1e-6)  # the last answer is read


def test_mastery_reads_an_average_item_and_priors_for_unknown_skills() -> None:
    tracer = small_tracer()
    hist = history(CORRECT) + [Interaction("z", "42", True)]
    mastery = tracer.mastery(hist)
    assert set(mastery) == {"1", "2", "3", "42"}
    assert mastery["42"] == pytest.approx(tracer.priors.global_prior, abs=1e-12)
    [unseen_item] = tracer.predict(hist, [("never-seen", "2")])
    assert mastery["2"] == pytest.approx(unseen_item.p_correct, abs=1e-12)
    assert tracer.mastery([]) == {}


def test_save_load_round_trip_and_load_tracer(tmp_path: Path) -> None:
    tracer = small_tracer(seed=9)
    tracer.save(tmp_path)
    assert artifact_architecture(tmp_path) == "lr"
    loaded = load_tracer(tmp_path)
    assert isinstance(loaded, LRTracer) and loaded.architecture == "lr"
    hist = history(CORRECT)
    assert p(loaded.trace(hist)) == pytest.approx(p(tracer.trace(hist)), abs=1e-6)
    assert loaded.tables == tracer.tables
    assert loaded.skill_name("3") == "Fractions" and loaded.skill_name("404") is None
    assert loaded.spec == tracer.spec and loaded.describe()["num_features"] > 0
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 100_000


def test_feature_spec_round_trips_and_refuses_unknown_groups() -> None:
    spec = FeatureSpec(num_items=5, num_skills=3, groups=ALL_GROUPS[:5], decays=(0.7,))
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.num_features == 5 + 3 + 2 + 6 + 2
    with pytest.raises(ValueError, match="unknown feature groups"):
        FeatureSpec(num_items=1, num_skills=1, groups=("item", "nope"))
