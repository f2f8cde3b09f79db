"""The knowledge tracers' shared, torch-free API: what a request carries and what it gets back.

``models.difficulty.tracer`` (DKT and the attentive tracer, torch) and
``models.difficulty.lr_tracer`` (logistic regression, numpy) both answer with these types and
read artifacts with these file names; ``models.difficulty.tracer`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from models.difficulty.data import Priors, Vocabulary

CONFIG_FILE = "tracer_config.json"  # its "architecture" says which tracer loads the artifact
VOCAB_FILE = "vocab.json"
PRIORS_FILE = "priors.json"
SKILL_NAMES_FILE = "skill_names.json"

DEFAULT_BAND = (0.70, 0.85)

COLD_START = "cold_start"
UNSEEN_ITEM = "unseen_item"
UNSEEN_SKILL = "unseen_skill"


class Interaction(NamedTuple):
    """One answer of a history. A named tuple, not a dataclass: a replica rebuilds up to 1,000
    of them a request (2x faster than a frozen dataclass) and the caches hash every one (3x
    faster); it equals, and hashes as, its plain ``(item_id, skill_id, correct)`` row."""

    item_id: str
    skill_id: str
    correct: bool


def as_interactions(rows: Sequence[Sequence[Any]]) -> list[Interaction]:
    """Interactions from ``(item_id, skill_id, correct)`` rows, the form a history crosses a
    Serve hop in: plain tuples pickle fastest (cloudpickle pickled 1,000 dataclass instances
    ~20x slower than the same rows as tuples), and a turn's history can be that long."""
    make = Interaction._make
    return [row if type(row) is Interaction else make(row) for row in rows]


@dataclass(frozen=True)
class CandidatePrediction:
    item_id: str
    skill_id: str
    p_correct: float
    flags: tuple[str, ...] = ()
    basis: str = "model"  # model | population | skill_prior | global_prior (module docstring)


def window_start(rows: int, max_history: int) -> int:
    """First row of the context the attempt after ``rows`` rows reads (module docstring)."""
    if rows <= max_history:
        return 0
    stride = max(1, max_history // 2)
    return -(-(rows - max_history) // stride) * stride


def recommend(
    predictions: Sequence[CandidatePrediction], band: tuple[float, float] = DEFAULT_BAND
) -> int:
    """Index of the prediction whose p_correct is nearest the target band.

    Inside the band counts as distance 0; ties go to the one nearest the band's middle, then
    to the first. Raises ValueError on no predictions or a band with low > high.
    """
    low, high = band
    if low > high:
        raise ValueError(f"band must be (low, high) with low <= high, got {band}")
    if not predictions:
        raise ValueError("no predictions to choose from")
    middle = (low + high) / 2

    def key(i: int) -> tuple[float, float, int]:
        p = predictions[i].p_correct
        # Rounded so that float noise (0.90 - 0.85 vs 0.70 - 0.65) does not break ties.
        return (round(max(low - p, 0.0, p - high), 9), round(abs(p - middle), 9), i)

    return min(range(len(predictions)), key=key)


class TracerAPI:
    """What every knowledge tracer answers, written once: ``predict``, ``trace``, ``mastery``
    and the flags and fallbacks of each prediction. A tracer supplies its ``vocab``, ``priors``
    and ``skill_names`` and two computations: P(correct) of targets as the attempt after a
    history (``_next_attempt_probabilities``), and every row's leak-free P(correct)
    (``_trace_probabilities``)."""

    vocab: Vocabulary
    priors: Priors
    skill_names: dict[str, str]

    def _next_attempt_probabilities(
        self, history: Sequence[Interaction], targets: Sequence[tuple[str, str]]
    ) -> list[float]:
        raise NotImplementedError

    def _trace_probabilities(self, history: Sequence[Interaction]) -> list[float]:
        raise NotImplementedError

    def _prediction(
        self, item_id: str, skill_id: str, p_model: float, cold: bool
    ) -> CandidatePrediction:
        flags = []
        if cold:
            flags.append(COLD_START)
        if not self.vocab.has_item(item_id):
            flags.append(UNSEEN_ITEM)
        if self.vocab.has_skill(skill_id):
            p, basis = float(p_model), "population" if cold else "model"
        else:
            flags.append(UNSEEN_SKILL)
            p = self.priors.for_skill(skill_id)
            basis = "skill_prior" if skill_id in self.priors.skill_priors else "global_prior"
        return CandidatePrediction(item_id, skill_id, p, tuple(flags), basis)

    def predict(
        self, history: Sequence[Interaction], candidates: Sequence[tuple[str, str]]
    ) -> list[CandidatePrediction]:
        """P(correct) for each ``(item_id, skill_id)`` candidate as the learner's next attempt
        (one computation over the history, shared by all candidates)."""
        if not candidates:
            return []
        probs = self._next_attempt_probabilities(history, candidates)
        cold = len(history) == 0
        return [
            self._prediction(item, skill, p, cold)
            for (item, skill), p in zip(candidates, probs, strict=True)
        ]

    def trace(self, history: Sequence[Interaction]) -> list[CandidatePrediction]:
        """The leak-free prediction of every history row from the attempts before it.

        Row t's prediction equals ``predict(history[:s], [(item, skill)])`` where ``s`` is the
        first row of row t's attempt; ``len(result) == len(history)``.
        """
        if not history:
            return []
        from models.difficulty.data import attempt_context_index

        context = attempt_context_index([h.item_id for h in history])
        probs = self._trace_probabilities(history)
        return [
            self._prediction(h.item_id, h.skill_id, probs[t], context[t] == -1)
            for t, h in enumerate(history)
        ]

    def mastery(self, history: Sequence[Interaction]) -> dict[str, float]:
        """P(correct) on each skill in the history, after the whole history, read on an average
        item of the skill (no item difficulty). Skills the model does not know get their prior
        (else the global prior)."""
        if not history:
            return {}
        skills = list(dict.fromkeys(h.skill_id for h in history))
        probs = self._next_attempt_probabilities(history, [("", s) for s in skills])
        return {
            skill: float(p) if self.vocab.has_skill(skill) else self.priors.for_skill(skill)
            for skill, p in zip(skills, probs, strict=True)
        }

    def skill_name(self, skill_id: str) -> str | None:
        return self.skill_names.get(str(skill_id))
