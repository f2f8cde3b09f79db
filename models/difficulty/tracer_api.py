"""The knowledge tracers' shared, torch-free API: what a request carries and what it gets back.

``models.difficulty.tracer`` (DKT and the attentive tracer, torch) and
``models.difficulty.lr_tracer`` (logistic regression, numpy) both answer with these types and
read artifacts with these file names; ``models.difficulty.tracer`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CONFIG_FILE = "tracer_config.json"  # its "architecture" says which tracer loads the artifact
VOCAB_FILE = "vocab.json"
PRIORS_FILE = "priors.json"
SKILL_NAMES_FILE = "skill_names.json"

DEFAULT_BAND = (0.70, 0.85)

COLD_START = "cold_start"
UNSEEN_ITEM = "unseen_item"
UNSEEN_SKILL = "unseen_skill"


@dataclass(frozen=True)
class Interaction:
    item_id: str
    skill_id: str
    correct: bool


def as_interactions(rows: Sequence[Sequence[Any]]) -> list[Interaction]:
    """Interactions from ``(item_id, skill_id, correct)`` rows, the form a history crosses a
    Serve hop in: cloudpickle pickles a list of 1,000 dataclass instances ~20x slower than
    the same rows as tuples (it inspects every instance), and a turn's history can be that."""
    return [row if isinstance(row, Interaction) else Interaction(*row) for row in rows]


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
