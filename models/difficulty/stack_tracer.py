"""The served stacked ensemble (architecture ``stack``): a logistic regression over its members'
logits, the model ``pipelines.difficulty.stacking`` fits and the CV harness measures.

Members are whole tracers (DKT, the attentive tracer, the feature model), each with its own
calibrated P(correct), its own context and its own per-learner cache; they are copied into the
artifact (``members/<name>/``), so a stack version never depends on another version's files.
P(correct) for a row whose learner has ``n`` earlier rows is

    sigmoid(intercept + sum_m a_m logit(p_m) + b log(1 + n) [+ sum_m c_m logit(p_m) log(1 + n)])

which is ``pipelines.difficulty.stacking.stack_features`` times the fitted coefficients (a test
holds the two equal). The same ``CandidatePrediction`` flags and basis as the primary member
(the feature model when there is one): cold start, unseen items and unseen skills read the same
for every member; an unseen skill's prior passes through, everything else is combined.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.difficulty.tracer_api import CONFIG_FILE, CandidatePrediction, Interaction

ARCHITECTURE = "stack"
MEMBERS_DIR = "members"
PROB_CLIP = 1e-6  # pipelines.difficulty.stacking.PROB_CLIP
# An unseen skill gets its prior from every member; the stack passes it through unchanged
# (the harness combined those rows too: they are a few per split, counted in evaluate's
# ``unseen_skill_rows``).
PRIOR_BASES = ("skill_prior", "global_prior")


def _logit(p: float) -> float:
    p = min(max(p, PROB_CLIP), 1 - PROB_CLIP)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


class StackedTracer:
    architecture = ARCHITECTURE

    def __init__(
        self,
        members: dict[str, Any],
        *,
        member_coef: Sequence[float],
        history_coef: float,
        intercept: float,
        interaction_coef: Sequence[float] | None = None,
        primary: str | None = None,
        fitted_on: dict[str, Any] | None = None,
    ) -> None:
        """``members``: name -> tracer, in the order of the coefficients; ``interaction_coef``
        None when the stack was fitted without the logit x log-history terms."""
        if not members:
            raise ValueError("a stack needs at least one member")
        if len(member_coef) != len(members):
            raise ValueError(f"{len(member_coef)} coefficients for {len(members)} members")
        if interaction_coef is not None and len(interaction_coef) != len(members):
            raise ValueError(f"{len(interaction_coef)} interactions for {len(members)} members")
        self.members = dict(members)
        self.member_coef = [float(c) for c in member_coef]
        self.history_coef = float(history_coef)
        self.intercept = float(intercept)
        self.interaction_coef = (
            None if interaction_coef is None else [float(c) for c in interaction_coef]
        )
        self.primary_name = primary or ("lr" if "lr" in self.members else next(iter(self.members)))
        self.primary = self.members[self.primary_name]
        self.fitted_on = dict(fitted_on or {})
        # What the deployment and callers read off any tracer.
        self.vocab = self.primary.vocab
        self.priors = self.primary.priors
        self.skill_names = self.primary.skill_names
        self.max_history = max(m.max_history for m in self.members.values())
        networks = [m for m in self.members.values() if hasattr(m, "encoding_cache")]
        # The costliest member cache to rebuild: the one the replica's metrics report.
        self.encoding_cache = networks[-1].encoding_cache if networks else None

    # ----------------------------------------------------------------------------- artifact
    @classmethod
    def from_artifact(
        cls,
        artifact_dir: Path | str,
        device: str = "cpu",
        *,
        max_history: int | None = None,
        encoding_cache_size: int | None = None,
    ) -> StackedTracer:
        """Each member from ``members/<name>/`` (``max_history`` and the cache size apply to
        every member; None keeps each member's own)."""
        from models.difficulty.loader import load_tracer  # the loader imports this module

        artifact_dir = Path(artifact_dir)
        config = json.loads((artifact_dir / CONFIG_FILE).read_text())
        if config.get("architecture") != ARCHITECTURE:
            raise ValueError(f"{artifact_dir} holds a {config.get('architecture')!r} tracer")
        kwargs: dict[str, Any] = {}
        if max_history is not None:
            kwargs["max_history"] = max_history
        if encoding_cache_size is not None:
            kwargs["encoding_cache_size"] = encoding_cache_size
        members = {
            name: load_tracer(artifact_dir / MEMBERS_DIR / name, device, **kwargs)
            for name in config["members"]
        }
        return cls(
            members,
            member_coef=config["member_coef"],
            history_coef=config["history_coef"],
            intercept=config["intercept"],
            interaction_coef=config.get("interaction_coef"),
            primary=config.get("primary"),
            fitted_on=config.get("fitted_on"),
        )

    def save(self, directory: Path | str) -> list[str]:
        """The config and every member's artifact under ``members/<name>/``; returns the
        top-level names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        members_dir = directory / MEMBERS_DIR
        if members_dir.exists():
            shutil.rmtree(members_dir)
        for name, member in self.members.items():
            member.save(members_dir / name)
        config = {
            "architecture": ARCHITECTURE,
            "members": list(self.members),
            "primary": self.primary_name,
            "member_coef": self.member_coef,
            "history_coef": self.history_coef,
            "interaction_coef": self.interaction_coef,
            "intercept": self.intercept,
            "fitted_on": self.fitted_on,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return [CONFIG_FILE, MEMBERS_DIR]

    # -------------------------------------------------------------------------------- model
    def combine(self, member_probs: Sequence[float], history_len: int) -> float:
        """The stack's P(correct) from each member's (in member order) for a row with
        ``history_len`` earlier rows."""
        log_history = math.log1p(history_len)
        z = self.intercept + self.history_coef * log_history
        for i, p in enumerate(member_probs):
            logit = _logit(p)
            z += self.member_coef[i] * logit
            if self.interaction_coef is not None:
                z += self.interaction_coef[i] * logit * log_history
        return _sigmoid(z)

    def _combined(
        self, answers: list[list[CandidatePrediction]], history_lens: Sequence[int]
    ) -> list[CandidatePrediction]:
        primary = answers[list(self.members).index(self.primary_name)]
        return [
            p
            if p.basis in PRIOR_BASES
            else CandidatePrediction(
                p.item_id,
                p.skill_id,
                self.combine([a[row].p_correct for a in answers], history_lens[row]),
                p.flags,
                p.basis,
            )
            for row, p in enumerate(primary)
        ]

    def context_window(self, history: Sequence[Interaction]) -> Sequence[Interaction]:
        """The widest member's window (the rows any member reads)."""
        return max((m.context_window(history) for m in self.members.values()), key=len)

    # ---------------------------------------------------------------------------------- API
    def predict(
        self, history: Sequence[Interaction], candidates: Sequence[tuple[str, str]]
    ) -> list[CandidatePrediction]:
        """P(correct) for each ``(item_id, skill_id)`` candidate as the learner's next attempt:
        every member predicts them (each from its own cache), the stack combines."""
        if not candidates:
            return []
        answers = [m.predict(history, candidates) for m in self.members.values()]
        return self._combined(answers, [len(history)] * len(candidates))

    def trace(self, history: Sequence[Interaction]) -> list[CandidatePrediction]:
        """Every row's leak-free prediction (each member's ``trace``, combined with the row's
        number of earlier rows, as the harness counts them)."""
        if not history:
            return []
        answers = [m.trace(history) for m in self.members.values()]
        return self._combined(answers, range(len(history)))

    def mastery(self, history: Sequence[Interaction]) -> dict[str, float]:
        """Each member's mastery per skill, combined (unknown skills: the primary's prior)."""
        if not history:
            return {}
        answers = [m.mastery(history) for m in self.members.values()]
        n = len(history)
        return {
            skill: self.combine([a[skill] for a in answers], n)
            if self.primary.vocab.has_skill(skill)
            else p
            for skill, p in answers[list(self.members).index(self.primary_name)].items()
        }

    def skill_name(self, skill_id: str) -> str | None:
        return self.primary.skill_name(skill_id)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.architecture,
            "members": {name: m.describe() for name, m in self.members.items()},
            "primary": self.primary_name,
            "member_coef": dict(zip(self.members, self.member_coef, strict=True)),
            "history_coef": self.history_coef,
            "interactions": self.interaction_coef is not None,
            "num_skills": self.vocab.num_skills,
            "num_items": len(self.vocab.items),
            "max_history": self.max_history,
            "global_prior": self.priors.global_prior,
            "encoding_cache": self.encoding_cache.stats()
            if self.encoding_cache is not None
            else None,
        }
