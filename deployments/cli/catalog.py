"""Which deployment serves each model, and which registered metrics `tutor models list` shows.

Registered in dicts rather than branched on by name, so a fourth versioned model is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployments.cli.errors import RefusedError
from deployments.lifecycle.rollout import MODELS

DEPLOYMENTS: dict[str, str] = {
    "emotion": "Emotion",
    "difficulty": "Difficulty",
    "personalization": "Personalization",
}
assert tuple(DEPLOYMENTS) == MODELS, "every rollout model needs its deployment here"


@dataclass(frozen=True)
class KeyMetric:
    """One column of `tutor models list`: the first of ``paths`` present in metadata.json's
    metrics (dotted paths, since versions record the same figure in different places)."""

    label: str
    paths: tuple[str, ...]

    def value(self, metrics: dict[str, Any]) -> Any:
        for path in self.paths:
            found: Any = metrics
            for part in path.split("."):
                found = found.get(part) if isinstance(found, dict) else None
            if found is not None:
                return found
        return None


KEY_METRICS: dict[str, tuple[KeyMetric, ...]] = {
    "emotion": (
        KeyMetric("macro_f1", ("test_macro_f1",)),
        KeyMetric("ekman_f1", ("test_ekman_macro_f1",)),
        # v3 calibrated the learner-state scores, v4 added a trained state head: the same
        # figure (held-out learner-state accuracy) sits under two keys.
        KeyMetric(
            "state_acc",
            (
                "learner_state_head.calibration.test_accuracy",
                "learner_state_calibration.test_accuracy",
            ),
        ),
        KeyMetric(
            "state_ece",
            (
                "learner_state_head.calibration.test_ece_after",
                "learner_state_calibration.test_ece_after",
            ),
        ),
    ),
    "difficulty": (
        KeyMetric("auc", ("test_auc",)),
        KeyMetric("log_loss", ("test_log_loss",)),
        KeyMetric("ece", ("test_ece",)),
        KeyMetric("acc", ("test_acc",)),
    ),
    # Personalization versions carry metrics from the simulation (pipelines/personalization).
    "personalization": (
        KeyMetric("mean_reward", ("mean_reward",)),
        KeyMetric("expected_reward", ("mean_expected_reward",)),
        KeyMetric("regret_per_turn", ("regret_per_turn",)),
    ),
}


def deployment_of(model: str) -> str:
    try:
        return DEPLOYMENTS[model]
    except KeyError:
        raise RefusedError(
            f"unknown model {model!r}: expected one of {', '.join(DEPLOYMENTS)}"
        ) from None


def key_metrics(model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The model's key metrics; where none of them is recorded (a new kind of version), the
    first few numeric top-level metrics, so a version is never listed without figures."""
    found = {m.label: m.value(metrics) for m in KEY_METRICS.get(model, ())}
    chosen = {label: value for label, value in found.items() if value is not None}
    if chosen:
        return chosen
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return dict(list(numeric.items())[:4])
