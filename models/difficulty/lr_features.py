"""Features of the logistic-regression knowledge tracer: a learner's state, updated per answer.

One module computes the features for training, evaluation, ``trace`` and serving
(``features_matrix`` and ``LearnerState.row`` are the only ways in), so what a served
prediction reads is what the fitted coefficients were fitted on.

Leak-free rule (as in ``models.difficulty.data.attempt_context_index``): consecutive rows with
the same item id are one attempt; every row of an attempt reads the state from before the
attempt. An attempt counts once overall and for its item, and once for each skill it tags (a
multi-skill problem logged as three rows adds one attempt to each of its three skills). The
state stays "open" on the newest attempt until a row with another item arrives (that row may
still be another skill of the same attempt); ``LearnerState.closed`` is the state a fresh
attempt reads.

Feature groups (``FeatureSpec.groups``). Best-LR (Gervet et al., JEDM 2020): ``item`` and
``skill`` indicators, ``total`` log(1 + attempts), log(1 + successes) overall,
``skill_counts`` the same per skill (one pair of columns per skill, so each skill learns its own
rate), ``item_counts`` the same on the candidate item. Best-LR+-style additions (Schmucker et al.,
JEDM 2022), for data without timestamps (time is counted in attempts): ``recent`` successes and
failures among the last k attempts, ``skill_recent`` the same on the candidate's skill,
``streak`` the current run of successes or failures on the skill, ``decay`` exponentially
recency-weighted successes and failures on the skill (R-PFA), ``window`` attempts and successes
on the skill within the last w attempts overall, ``gap`` attempts since the skill was last
practised, ``item_last`` the outcome of the last attempt at the same item, ``rates`` smoothed
log-odds of the success rate overall, on the skill and recently, ``skill_fails`` log(1 +
failures) per skill, ``skill_decay`` the 0.8-decayed counts per skill.

Item tables (``models.difficulty.lr_tables``, from the training split). ``FeatureSpec.qmatrix``:
the per-skill columns (``skill``, ``skill_counts``, ``skill_fails``, ``skill_decay``) of a row
are those of all its item's training skills (Best-LR's Q-matrix), so the rows of a multi-skill
problem read the same columns there; the scalar skill groups stay on the row's skill.
``ability``: the learner's summed residuals (outcome minus the item's training mean) over
their attempts, overall and on the skill, shrunk by (count + 1). ``elo``: an Elo rating (Pelanek
2016) overall and on the skill(s), updated by each attempt's surprise against the item's
training mean, and the expected log-odds on the candidate item. Training rows read tables that
leave their own learner out (``features_matrix(leave_out=True)``): an item mean holding the
row's own response would leak it.

An id the vocabulary lacks (index 0) has no indicator or per-skill column; the counts still
accumulate under its id, so a known skill after it is read correctly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from models.difficulty.data import UNKNOWN_INDEX, StudentSequence, Vocabulary
from models.difficulty.lr_spec import ALL_GROUPS, BEST_LR, EXTRA_GROUPS, FeatureSpec
from models.difficulty.lr_tables import EMPTY_TABLES, ItemTables

__all__ = [
    "ALL_GROUPS",
    "BEST_LR",
    "EXTRA_GROUPS",
    "FeatureSpec",
    "LearnerState",
    "features_matrix",
    "sequence_rows",
]

# A skill's state is an immutable tuple, replaced on update: a shallow copy of the learner's
# dictionaries is then a safe snapshot (``LearnerState.copy``).
# (attempts, successes, last attempt index, streak (+k successes / -k failures in a row),
#  decayed (successes, failures) per decay, latest (attempt index, outcome) pairs,
#  sum of (outcome - the item's training mean correctness), Elo rating on the skill)
SkillState = tuple[int, int, int, int, tuple[float, ...], tuple[tuple[int, int], ...], float, float]


def _log1p(x: float) -> float:
    return math.log1p(x)


class LearnerState:
    """A learner's counts after the rows added so far (the newest attempt still open)."""

    __slots__ = (
        "spec",
        "tables",
        "attempts",
        "successes",
        "residual",
        "theta",
        "recent",
        "skills",
        "items",
        "open",
        "rows",
    )

    def __init__(self, spec: FeatureSpec, tables: ItemTables = EMPTY_TABLES) -> None:
        self.spec = spec
        self.tables = tables
        self.residual = 0.0  # sum of (outcome - the item's training mean correctness)
        self.theta = 0.0  # Elo rating overall
        self.attempts = 0
        self.successes = 0
        self.recent: tuple[int, ...] = ()  # latest outcomes overall, newest last
        self.skills: dict[str, SkillState] = {}
        self.items: dict[str, tuple[int, int, int]] = {}  # attempts, successes, last outcome
        # The open attempt: (item id, [(skill id, outcome) per row]) or None.
        self.open: tuple[str, list[tuple[str, int]]] | None = None
        self.rows = 0

    def copy(self) -> LearnerState:
        other = LearnerState.__new__(LearnerState)
        other.spec, other.tables, other.residual = self.spec, self.tables, self.residual
        other.theta = self.theta
        other.attempts, other.successes, other.recent = self.attempts, self.successes, self.recent
        other.skills, other.items = dict(self.skills), dict(self.items)
        other.open = None if self.open is None else (self.open[0], list(self.open[1]))
        other.rows = self.rows
        return other

    # ------------------------------------------------------------------------------ updates
    def start(self, item_id: str) -> None:
        """Close the open attempt if ``item_id`` begins a new one (the state a row reads)."""
        if self.open is not None and self.open[0] != item_id:
            self._commit()

    def add(self, item_id: str, skill_id: str, correct: int | bool) -> None:
        self.start(item_id)
        if self.open is None:
            self.open = (item_id, [])
        self.open[1].append((skill_id, int(correct)))
        self.rows += 1

    def closed(self) -> LearnerState:
        """The state a fresh attempt reads: a copy with the open attempt counted."""
        other = self.copy()
        if other.open is not None:
            other._commit()
        return other

    def _commit(self) -> None:
        assert self.open is not None
        item_id, rows = self.open
        self.open = None
        outcome = rows[0][1]  # the rows of one attempt share its response
        index = self.attempts  # this attempt's index, counted from 0
        self.attempts += 1
        self.successes += outcome
        expected = self.tables.expected(item_id, rows[0][0])
        residual = outcome - expected
        self.residual += residual
        # Elo (Pelanek 2016): the rating moves by the surprise, less as evidence accumulates.
        tags = dict(rows)
        skill_thetas = [(self.skills.get(t) or _EMPTY_SKILL)[7] for t in tags]
        surprise = outcome - _sigmoid(
            self.theta + sum(skill_thetas) / len(skill_thetas) + _logit(expected)
        )
        self.theta += _elo_step(index) * surprise
        keep_recent = max(self.spec.recent, default=0)
        if keep_recent:
            self.recent = (*self.recent, outcome)[-keep_recent:]
        attempts, successes, _ = self.items.get(item_id, (0, 0, 0))
        self.items[item_id] = (attempts + 1, successes + outcome, outcome)
        keep = self.spec.history_needed
        decays = self.spec.decays
        for skill_id, correct in tags.items():  # each skill once per attempt
            state = self.skills.get(skill_id)
            if state is None:
                state = (0, 0, -1, 0, (0.0,) * (2 * len(decays)), (), 0.0, 0.0)
            n, s, _, streak, decayed, latest, skill_residual, skill_theta = state
            if correct:
                streak = streak + 1 if streak > 0 else 1
            else:
                streak = streak - 1 if streak < 0 else -1
            new_decayed = []
            for j, d in enumerate(decays):
                new_decayed.append(decayed[2 * j] * d + correct)
                new_decayed.append(decayed[2 * j + 1] * d + (1 - correct))
            self.skills[skill_id] = (
                n + 1,
                s + correct,
                index,
                streak,
                tuple(new_decayed),
                (*latest, (index, correct))[-keep:],
                skill_residual + residual,
                skill_theta + _elo_step(n) * surprise,
            )

    # ----------------------------------------------------------------------------- features
    def row(self, vocab: Vocabulary, item_id: str, skill_id: str) -> tuple[list[int], list[float]]:
        """The sparse feature row (column indices, values) of ``(item_id, skill_id)`` read from
        this state as it is (call ``start`` or ``closed`` first to say which attempt it is)."""
        spec = self.spec
        cols: list[int] = []
        vals: list[float] = []
        item = vocab.item_index(item_id)
        skill = vocab.skill_index(skill_id)
        offset = spec._offsets
        if "item" in offset and item != UNKNOWN_INDEX:
            cols.append(offset["item"] + item - 1)
            vals.append(1.0)
        if "total" in offset:
            base = offset["total"]
            cols += [base, base + 1]
            vals += [_log1p(self.attempts), _log1p(self.successes)]
        state = self.skills.get(skill_id)
        n, s, last, streak, decayed, latest, residual, skill_theta = state or _EMPTY_SKILL
        # Per-skill columns: of the row's skill, or with the Q-matrix of all the item's skills.
        tagged = (
            [(vocab.skill_index(t), self.skills.get(t) or _EMPTY_SKILL) for t in row_skills]
            if spec.qmatrix and len(row_skills := self.tables.skills_of(item_id, skill_id)) > 1
            else [(skill, state or _EMPTY_SKILL)]
        )
        if "skill" in offset:
            for index, _ in tagged:
                if index != UNKNOWN_INDEX:
                    cols.append(offset["skill"] + index - 1)
                    vals.append(1.0)
        if "skill_counts" in offset:
            for index, (tn, ts, *_) in tagged:
                if index != UNKNOWN_INDEX and tn:
                    base = offset["skill_counts"] + 2 * (index - 1)
                    cols += [base, base + 1]
                    vals += [_log1p(tn), _log1p(ts)]
        if "item_counts" in offset:
            item_state = self.items.get(item_id)
            if item_state is not None:
                base = offset["item_counts"]
                cols += [base, base + 1]
                vals += [_log1p(item_state[0]), _log1p(item_state[1])]
        if "recent" in offset:
            base = offset["recent"]
            for j, k in enumerate(spec.recent):
                window = self.recent[-k:]
                wins = sum(window)
                cols += [base + 2 * j, base + 2 * j + 1]
                vals += [float(wins), float(len(window) - wins)]
        if "skill_recent" in offset and n:
            base = offset["skill_recent"]
            for j, k in enumerate(spec.skill_recent):
                window = latest[-k:]
                wins = sum(c for _, c in window)
                cols += [base + 2 * j, base + 2 * j + 1]
                vals += [float(wins), float(len(window) - wins)]
        if "streak" in offset and streak:
            cols.append(offset["streak"] + (0 if streak > 0 else 1))
            vals.append(_log1p(abs(streak)))
        if "decay" in offset and n:
            base = offset["decay"]
            cols += list(range(base, base + len(decayed)))
            vals += list(decayed)
        if "window" in offset and n:
            base = offset["window"]
            for j, w in enumerate(spec.windows):
                inside = [c for index, c in latest if index >= self.attempts - w]
                cols += [base + 2 * j, base + 2 * j + 1]
                vals += [_log1p(len(inside)), _log1p(sum(inside))]
        if "gap" in offset:
            base = offset["gap"]
            if n:
                cols += [base, base + 2]
                vals += [
                    _log1p(self.attempts - 1 - last),
                    1.0 if last == self.attempts - 1 else 0.0,
                ]
            else:
                cols.append(base + 1)
                vals.append(1.0)
        if "item_last" in offset:
            item_state = self.items.get(item_id)
            if item_state is not None:
                cols.append(offset["item_last"] + (0 if item_state[2] else 1))
                vals.append(1.0)
        if "rates" in offset:
            base = offset["rates"]
            window = self.recent
            cols += [base, base + 1, base + 2]
            vals += [
                _logit_rate(self.successes, self.attempts),
                _logit_rate(s, n),
                _logit_rate(sum(window), len(window)),
            ]
        if "skill_fails" in offset:
            for index, (tn, ts, *_) in tagged:
                if index != UNKNOWN_INDEX and tn > ts:
                    cols.append(offset["skill_fails"] + index - 1)
                    vals.append(_log1p(tn - ts))
        if "skill_decay" in offset:
            for index, (tn, _, _, _, tdecayed, *_) in tagged:
                if index != UNKNOWN_INDEX and tn:
                    base = offset["skill_decay"] + 2 * (index - 1)
                    cols += [base, base + 1]
                    vals += [tdecayed[-2], tdecayed[-1]]
        if "ability" in offset:
            # Shrunk mean residuals: how much better than the items' averages the learner did.
            base = offset["ability"]
            cols += [base, base + 1]
            vals += [self.residual / (self.attempts + 1), residual / (n + 1)]
        if "elo" in offset:
            base = offset["elo"]
            theta = self.theta + sum(t[7] for _, t in tagged) / len(tagged)
            cols += [base, base + 1, base + 2]
            vals += [
                self.theta,
                theta - self.theta,
                theta + _logit(self.tables.expected(item_id, skill_id)),
            ]
        return cols, vals


def _logit_rate(successes: int, attempts: int) -> float:
    """Log-odds of the success rate with one success and one failure added (0 when none)."""
    return math.log((successes + 1) / (attempts - successes + 1))


_EMPTY_SKILL: SkillState = (0, 0, -1, 0, (), (), 0.0, 0.0)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _elo_step(n: int) -> float:
    """Elo's step after ``n`` earlier attempts (Pelanek's uncertainty function)."""
    return 0.4 / (1.0 + 0.05 * n)


def sequence_rows(
    spec: FeatureSpec,
    vocab: Vocabulary,
    rows: Iterable[tuple[str, str, int]],
    tables: ItemTables = EMPTY_TABLES,
) -> Iterable[tuple[list[int], list[float]]]:
    """Each row's leak-free feature row, from a fresh learner (the whole sequence is read)."""
    state = LearnerState(spec, tables)
    for item_id, skill_id, correct in rows:
        state.start(item_id)
        yield state.row(vocab, item_id, skill_id)
        state.add(item_id, skill_id, correct)


def features_matrix(
    spec: FeatureSpec,
    vocab: Vocabulary,
    sequences: Sequence[StudentSequence],
    tables: ItemTables = EMPTY_TABLES,
    *,
    leave_out: bool = False,
) -> sp.csr_matrix:
    """The CSR matrix of every row of ``sequences``, students in order, rows in sequence order
    (the canonical order); each student's counts span the whole sequence before the row."""
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for seq in sequences:
        rows = zip(seq.item_ids, seq.skill_ids, seq.correct, strict=True)
        own = tables.leave_out(seq) if leave_out else tables
        for cols, vals in sequence_rows(spec, vocab, rows, own):
            indices += cols
            data += vals
            indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int32), indptr),
        shape=(len(indptr) - 1, spec.num_features),
    )
