"""Knowledge tracing (DKT and the attentive AKT): leak-free grouping, trace/predict
consistency, flags, recommend, the artifact's files. Model-level tests run on both
architectures; the shipped artifacts and reports are tested in ``test_shipped.py``.

Tolerances. The networks compute in float32, whose spacing near 1 is ~1.2e-7:
- 1e-7 (probabilities): the same value through the same code path (a save/load round trip,
  rows a flipped response cannot reach); the margin only keeps the test off bitwise kernel
  determinism.
- 1e-6 (probabilities, hidden states): the same value summed in another order (batched vs one
  row, padded vs not, one LSTM call vs two): a few float32 ulps.
- 1e-5: chains of cached extensions (each one reorders the sums again), and AKT's encodings,
  whose values reach ~10.
- 1e-4 on logits divided by a temperature: ``logit(sigmoid(z))`` loses precision where p is
  near 0 or 1.
- 1e-12 on plain float64 values (priors returned as stored, means of a few numbers): exact up
  to the last bits of the arithmetic.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from models.difficulty.akt import AKT, AKTConfig
from models.difficulty.data import (
    Priors,
    StudentSequence,
    Vocabulary,
    attempt_context_index,
    parse_akt_lines,
    per_row_context_index,
    windows,
)
from models.difficulty.dkt import DKT, DKTConfig, encode_batch
from models.difficulty.tracer import (
    ARTIFACT_FILES,
    COLD_START,
    CONFIG_FILE,
    LEGACY_CONFIG_FILE,
    LEGACY_WEIGHTS_FILE,
    UNSEEN_ITEM,
    UNSEEN_SKILL,
    WEIGHTS_FILE,
    CandidatePrediction,
    Interaction,
    KnowledgeTracer,
    recommend,
    window_start,
)

# Student "s": item a (skill 1), multi-skill item b (skills 1, 2, 3: one response), c, then d.
ITEMS = ["a", "b", "b", "b", "c", "d"]
SKILLS = ["1", "1", "2", "3", "2", "3"]
CORRECT = [1, 0, 0, 0, 1, 1]
MULTI_SKILL_ROWS = [1, 2, 3]


# "akt-context": the tracer with AKT's context-aware decay and its output reading the embedding.
ARCHITECTURES = ["dkt", "akt", "akt-context"]


def small_tracer(
    seed: int = 0, max_history: int = 200, architecture: str = "dkt"
) -> KnowledgeTracer:
    torch.manual_seed(seed)
    train = [StudentSequence("s", ITEMS, SKILLS, CORRECT)]
    vocab = Vocabulary.build(train)
    if architecture == "dkt":
        model = DKT(DKTConfig(num_skills=vocab.num_skills, hidden_size=8, embedding_dim=6))
    else:
        variant = (
            {"decay": "context", "output_reads": "embedding", "output_layers": 2}
            if architecture == "akt-context"
            else {}
        )
        config = AKTConfig(
            num_skills=vocab.num_skills, num_items=len(vocab.items), d_model=8, num_heads=2,
            ffn_dim=16, item_bias=True, **variant,
        )  # fmt: skip
        model = AKT(config)
        # Random (not zero-initialised) item difficulties, so that items matter in the tests.
        with torch.no_grad():
            model.difficulty.weight[1:].normal_()
            model.item_bias.weight[1:].normal_()
    names = {"1": "Addition", "2": "Subtraction", "3": "Fractions"}
    return KnowledgeTracer(model, vocab, Priors.compute(train), names, max_history=max_history)


def history(correct: list[int], items: list[str] = ITEMS, skills: list[str] = SKILLS):
    return [Interaction(i, s, bool(c)) for i, s, c in zip(items, skills, correct, strict=True)]


# ------------------------------------------------------------------------------- data parsing
def test_parse_akt_four_line_records() -> None:
    lines = ["12,80001", "5,5,7", "1,2,1", "1,1,0", "", "13,80002", "9", "4", "0"]
    seqs = parse_akt_lines(lines)
    assert [s.student for s in seqs] == ["12", "13"]
    assert seqs[0].item_ids == ["5", "5", "7"]
    assert seqs[0].skill_ids == ["1", "2", "1"]
    assert seqs[0].correct == [1, 1, 0]
    with pytest.raises(ValueError):
        parse_akt_lines(["1,2", "5,5", "1", "1,1"])


def test_windows_split_long_sequences() -> None:
    seq = StudentSequence("s", [str(i) for i in range(5)], ["1"] * 5, [1, 0, 1, 0, 1])
    assert [len(w) for w in windows([seq], 2)] == [2, 2, 1]


def test_vocabulary_reserves_zero_for_unknown() -> None:
    vocab = Vocabulary.build([StudentSequence("s", ITEMS, SKILLS, CORRECT)])
    assert vocab.num_skills == 3
    assert vocab.skill_index("zzz") == 0 and vocab.item_index("zzz") == 0
    assert {vocab.skill_index(s) for s in SKILLS} == {1, 2, 3}
    assert Vocabulary.from_dict(vocab.to_dict()).skills == vocab.skills


# ------------------------------------------------------------------------------- leak-free rule
def test_attempt_context_index_groups_consecutive_rows_of_one_item() -> None:
    assert attempt_context_index(["a", "b", "b", "b", "c", "c", "d"]) == [-1, 0, 0, 0, 3, 3, 5]
    assert attempt_context_index([]) == []
    assert attempt_context_index(["a", "a"]) == [-1, -1]
    # Only consecutive rows group: a later return to the same item is a new attempt.
    assert attempt_context_index(["a", "b", "a"]) == [-1, 0, 1]
    assert per_row_context_index(3) == [-1, 0, 1]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_multi_skill_response_never_reaches_its_own_rows(architecture: str) -> None:
    tracer = small_tracer(architecture=architecture)
    flipped = list(CORRECT)
    for t in MULTI_SKILL_ROWS:
        flipped[t] = 1 - flipped[t]
    before = [p.p_correct for p in tracer.trace(history(CORRECT))]
    after = [p.p_correct for p in tracer.trace(history(flipped))]
    for t in [0, *MULTI_SKILL_ROWS]:
        assert before[t] == pytest.approx(after[t], abs=1e-7), t
    for t in (4, 5):  # later attempts do see the response
        assert before[t] != pytest.approx(after[t], abs=1e-6), t


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_forward_uses_the_same_leak_free_gather(architecture: str) -> None:
    tracer = small_tracer(architecture=architecture)
    flipped = list(CORRECT)
    for t in MULTI_SKILL_ROWS:
        flipped[t] = 1 - flipped[t]
    logits = {}
    for name, correct in (("orig", CORRECT), ("flip", flipped)):
        batch = encode_batch([StudentSequence("s", ITEMS, SKILLS, correct)], tracer.vocab)
        logits[name], loss = tracer.model(
            batch.skills, batch.correct, batch.context_index, batch.correct.float(), batch.mask,
            items=batch.items,
        )  # fmt: skip
        assert loss is not None and torch.isfinite(loss)
    assert torch.allclose(logits["orig"][0, :4], logits["flip"][0, :4], atol=1e-6)
    assert not torch.allclose(logits["orig"][0, 4:], logits["flip"][0, 4:], atol=1e-6)
    # The leaky per-row protocol, by contrast, lets row 2 see row 1's (shared) response.
    leaky = {}
    for name, correct in (("orig", CORRECT), ("flip", flipped)):
        batch = encode_batch(
            [StudentSequence("s", ITEMS, SKILLS, correct)], tracer.vocab, protocol="row"
        )
        leaky[name], _ = tracer.model(
            batch.skills, batch.correct, batch.context_index, items=batch.items
        )
    assert not torch.allclose(leaky["orig"][0, 2], leaky["flip"][0, 2], atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_padding_does_not_change_real_rows(architecture: str) -> None:
    tracer = small_tracer(architecture=architecture)
    short = StudentSequence("s", ITEMS[:3], SKILLS[:3], CORRECT[:3])
    long = StudentSequence("t", ITEMS, SKILLS, CORRECT)
    alone = encode_batch([short], tracer.vocab)
    padded = encode_batch([short, long], tracer.vocab)
    a, _ = tracer.model(alone.skills, alone.correct, alone.context_index, items=alone.items)
    b, _ = tracer.model(padded.skills, padded.correct, padded.context_index, items=padded.items)
    assert torch.allclose(a[0], b[0, :3], atol=1e-6)


# ----------------------------------------------------------------------- trace / predict / API
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_trace_matches_predict_from_the_start_of_each_attempt(architecture: str) -> None:
    tracer = small_tracer(seed=3, architecture=architecture)
    hist = history(CORRECT)
    traced = tracer.trace(hist)
    assert len(traced) == len(hist)
    starts = [c + 1 for c in attempt_context_index(ITEMS)]
    for t, step in enumerate(hist):
        [expected] = tracer.predict(hist[: starts[t]], [(step.item_id, step.skill_id)])
        assert traced[t].p_correct == pytest.approx(expected.p_correct, abs=1e-6)
        assert traced[t].flags == expected.flags
        assert (traced[t].item_id, traced[t].skill_id) == (step.item_id, step.skill_id)
    assert COLD_START in traced[0].flags and COLD_START not in traced[4].flags


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_trace_matches_batched_evaluation_forward(architecture: str) -> None:
    tracer = small_tracer(seed=5, architecture=architecture)
    batch = encode_batch([StudentSequence("s", ITEMS, SKILLS, CORRECT)], tracer.vocab)
    logits, _ = tracer.model(batch.skills, batch.correct, batch.context_index, items=batch.items)
    traced = [p.p_correct for p in tracer.trace(history(CORRECT))]
    assert traced == pytest.approx(torch.sigmoid(logits[0]).tolist(), abs=1e-6)


def test_window_start_moves_by_half_the_window() -> None:
    assert [window_start(n, 4) for n in (0, 3, 4, 5, 6, 7, 8, 9)] == [0, 0, 0, 2, 2, 4, 4, 6]
    assert [window_start(n, 200) for n in (200, 201, 300, 301, 1000)] == [0, 100, 100, 200, 800]
    assert window_start(5, 1) == 4


def long_history(rows: int, seed: int = 0) -> list[Interaction]:
    """Random attempts over the small vocabulary, multi-skill item b included, plus one item
    and one skill the model has never seen."""
    rng = random.Random(seed)
    out: list[Interaction] = []
    while len(out) < rows:
        item = rng.choice(["a", "b", "c", "d", "new-item"])
        skills = ["1", "2", "3"] if item == "b" else [rng.choice(["1", "2", "3", "99"])]
        correct = rng.random() < 0.6
        out += [Interaction(item, skill, correct) for skill in skills]
    return out[:rows]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_long_history_reads_its_window(architecture: str) -> None:
    tracer = small_tracer(max_history=4, architecture=architecture)
    hist = long_history(9)
    start = window_start(len(hist), 4)
    assert list(tracer.context_window(hist)) == hist[start:]
    full = tracer.predict(hist, [("a", "1")])[0].p_correct
    recent = tracer.predict(hist[start:], [("a", "1")])[0].p_correct
    assert full == pytest.approx(recent, abs=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_trace_of_a_long_history_matches_predict_on_each_prefix(architecture: str) -> None:
    tracer = small_tracer(seed=4, max_history=4, architecture=architecture)
    hist = long_history(15, seed=1)
    traced = tracer.trace(hist)
    assert len(traced) == len(hist)
    starts = [c + 1 for c in attempt_context_index([h.item_id for h in hist])]
    for t, step in enumerate(hist):
        [expected] = tracer.predict(hist[: starts[t]], [(step.item_id, step.skill_id)])
        assert traced[t].p_correct == pytest.approx(expected.p_correct, abs=1e-6), t
        assert (traced[t].flags, traced[t].basis) == (expected.flags, expected.basis), t


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encoding_cache_extends_a_learners_encoding_and_changes_no_answer(
    architecture: str,
) -> None:
    cached = small_tracer(seed=6, max_history=8, architecture=architecture)
    uncached = small_tracer(seed=6, max_history=8, architecture=architecture)
    uncached.encoding_cache = None
    hist = long_history(40, seed=2)
    candidates = [("a", "1"), ("b", "2"), ("new-item", "3"), ("x", "99")]
    # One answer at a time, as a learner's turns arrive; the window jumps every 4 rows.
    for n in range(len(hist) + 1):
        got = cached.predict(hist[:n], candidates)
        want = uncached.predict(hist[:n], candidates)
        assert [p.p_correct for p in got] == pytest.approx([p.p_correct for p in want], abs=1e-5)
    stats = cached.encoding_cache.stats()
    # Between jumps only the newest row is encoded: most rows come from the cache.
    assert stats["reuse_ratio"] > 0.6
    # Each extension replaced the entry it extended: one entry per window start.
    assert stats["entries"] == len({window_start(n, 8) for n in range(1, len(hist) + 1)})
    # A different history with a shared prefix reuses the prefix, and answers as uncached.
    branch = hist[:37] + [Interaction("c", "2", False)]
    assert cached.predict(branch, candidates)[0].p_correct == pytest.approx(
        uncached.predict(branch, candidates)[0].p_correct, abs=1e-5
    )


def test_akt_encoding_extended_row_by_row_equals_the_full_encoding() -> None:
    tracer = small_tracer(seed=8, architecture="akt")
    hist = long_history(12, seed=3)
    skills, items, correct = tracer._tensors(hist)
    context = torch.tensor([attempt_context_index([h.item_id for h in hist])])
    full = tracer.model.encode_history(skills, items, correct, context)
    known = None
    for n in (1, 2, 5, 6, 12):
        known = tracer.model.encode_history(
            skills[:, :n], items[:, :n], correct[:, :n], context[:, :n], known=known
        )
    assert torch.allclose(known.questions, full.questions, atol=1e-5)
    assert torch.allclose(known.answers, full.answers, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_temperature_divides_the_logits_and_survives_the_artifact(
    architecture: str, tmp_path: Path
) -> None:
    tracer = small_tracer(seed=11, architecture=architecture)
    hist = history(CORRECT)
    before = torch.logit(torch.tensor([p.p_correct for p in tracer.trace(hist)]))
    tracer.model.config = dataclasses.replace(tracer.model.config, temperature=2.0)
    tracer.save(tmp_path)
    loaded = KnowledgeTracer.from_artifact(tmp_path)
    after = torch.logit(torch.tensor([p.p_correct for p in loaded.trace(hist)]))
    assert loaded.model.config.temperature == pytest.approx(2.0, abs=1e-12)
    assert torch.allclose(after, before / 2, atol=1e-4)


def test_dkt_advance_continues_the_lstm() -> None:
    tracer = small_tracer(seed=2, architecture="dkt")
    skills, _, correct = tracer._tensors(long_history(10, seed=4))
    memory = tracer.model.advance(skills[:, :3], correct[:, :3])
    memory = tracer.model.advance(skills[:, 3:], correct[:, 3:], memory)
    states = tracer.model.hidden_states(skills, correct)
    assert torch.allclose(memory[0][0, 0], states[0, -1], atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_predict_flags_and_fallbacks(architecture: str) -> None:
    tracer = small_tracer(architecture=architecture)
    cold = tracer.predict([], [("a", "1"), ("new", "1"), ("new", "99")])
    assert cold[0].flags == (COLD_START,)
    assert cold[1].flags == (COLD_START, UNSEEN_ITEM)
    assert cold[2].flags == (COLD_START, UNSEEN_ITEM, UNSEEN_SKILL)
    assert cold[2].p_correct == pytest.approx(tracer.priors.global_prior, abs=1e-12)
    assert [p.basis for p in cold] == ["population", "population", "global_prior"]
    warm = tracer.predict(history(CORRECT), [("a", "1"), ("x", "99"), ("y", "3")])
    assert warm[0].flags == ()
    assert warm[1].flags == (UNSEEN_ITEM, UNSEEN_SKILL)
    assert [p.basis for p in warm] == ["model", "global_prior", "model"]
    # A skill the model lacks but the priors know falls back to that skill's own prior.
    tracer.priors.skill_priors["99"] = 0.25
    [known_prior] = tracer.predict(history(CORRECT), [("x", "99")])
    assert known_prior.basis == "skill_prior"
    assert known_prior.p_correct == pytest.approx(0.25, abs=1e-12)
    assert all(0.0 < p.p_correct < 1.0 for p in cold + warm)
    assert tracer.predict(history(CORRECT), []) == []


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_mastery_covers_seen_skills(architecture: str) -> None:
    tracer = small_tracer(architecture=architecture)
    hist = history(CORRECT) + [Interaction("z", "42", True)]
    mastery = tracer.mastery(hist)
    assert set(mastery) == {"1", "2", "3", "42"}
    assert mastery["42"] == pytest.approx(tracer.priors.global_prior, abs=1e-12)
    # Mastery is read on an average item of the skill: an item the model has not seen.
    [p] = tracer.predict(hist, [("never-seen", "2")])
    assert mastery["2"] == pytest.approx(p.p_correct, abs=1e-6)
    assert tracer.mastery([]) == {}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_and_load_round_trip(architecture: str, tmp_path: Path) -> None:
    tracer = small_tracer(seed=9, architecture=architecture)
    tracer.save(tmp_path)
    loaded = KnowledgeTracer.from_artifact(tmp_path)
    hist = history(CORRECT)
    assert [p.p_correct for p in loaded.trace(hist)] == pytest.approx(
        [p.p_correct for p in tracer.trace(hist)], abs=1e-7
    )
    assert loaded.skill_name("3") == "Fractions" and loaded.skill_name("404") is None


# ------------------------------------------------------------------------------------ recommend
def _preds(*ps: float) -> list[CandidatePrediction]:
    return [CandidatePrediction(str(i), "1", p) for i, p in enumerate(ps)]


def test_recommend_band_logic() -> None:
    assert recommend(_preds(0.2, 0.97, 0.6)) == 2  # 0.10 below beats 0.12 above
    assert recommend(_preds(0.2, 0.72, 0.80)) == 2  # both inside: nearer the middle 0.775
    assert recommend(_preds(0.90, 0.65)) == 0  # 0.05 above and below: a tie -> the first
    assert recommend(_preds(0.65, 0.90)) == 0
    assert recommend(_preds(0.5, 0.84, 0.71)) == 1  # inside ties at 0: 0.84 nearer 0.775
    assert recommend(_preds(0.6, 0.6)) == 0  # full tie -> the first
    assert recommend(_preds(0.1, 0.5), band=(0.4, 0.6)) == 1
    with pytest.raises(ValueError):
        recommend([])
    with pytest.raises(ValueError):
        recommend(_preds(0.5), band=(0.9, 0.1))


# ------------------------------------------------------------------ attentive tracer specifics
def test_akt_reads_item_difficulty_and_falls_back_to_the_skill_for_unseen_items() -> None:
    tracer = small_tracer(seed=4, architecture="akt")
    hist = history(CORRECT)
    known_a, known_c, unseen = tracer.predict(hist, [("a", "2"), ("c", "2"), ("new", "2")])
    assert known_a.p_correct != pytest.approx(known_c.p_correct, abs=1e-4)  # items differ
    assert unseen.flags == (UNSEEN_ITEM,)
    assert unseen.p_correct == pytest.approx(tracer.mastery(hist)["2"], abs=1e-6)


def test_akt_artifact_round_trip_keeps_the_architecture(tmp_path: Path) -> None:
    tracer = small_tracer(seed=2, architecture="akt")
    tracer.save(tmp_path)
    loaded = KnowledgeTracer.from_artifact(tmp_path)
    assert loaded.describe()["model"] == "akt"
    hist = history(CORRECT)
    assert [p.p_correct for p in loaded.predict(hist, [("c", "2")])] == pytest.approx(
        [p.p_correct for p in tracer.predict(hist, [("c", "2")])], abs=1e-7
    )


# ------------------------------------------------------------------------ the artifact's files
@pytest.mark.parametrize("architecture", ["dkt", "akt"])
def test_an_artifact_is_saved_under_names_that_say_what_they_hold(
    architecture: str, tmp_path: Path
) -> None:
    tracer = small_tracer(seed=1, architecture=architecture)
    assert sorted(tracer.save(tmp_path)) == sorted(p.name for p in tmp_path.iterdir())
    assert {WEIGHTS_FILE, CONFIG_FILE} <= set(ARTIFACT_FILES)
    assert not (tmp_path / LEGACY_WEIGHTS_FILE).exists()


@pytest.mark.parametrize("architecture", ["dkt", "akt"])
def test_an_artifact_saved_under_the_old_names_still_loads(
    architecture: str, tmp_path: Path
) -> None:
    tracer = small_tracer(seed=12, architecture=architecture)
    tracer.save(tmp_path)
    (tmp_path / WEIGHTS_FILE).rename(tmp_path / LEGACY_WEIGHTS_FILE)
    (tmp_path / CONFIG_FILE).rename(tmp_path / LEGACY_CONFIG_FILE)
    loaded = KnowledgeTracer.from_artifact(tmp_path)
    assert loaded.architecture == architecture
    hist = history(CORRECT)
    assert [p.p_correct for p in loaded.trace(hist)] == pytest.approx(
        [p.p_correct for p in tracer.trace(hist)], abs=1e-7
    )
