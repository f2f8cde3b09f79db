"""Serving-side knowledge tracing: P(correct) for candidate items given a learner's history.

The API (``Interaction``, ``CandidatePrediction``, ``KnowledgeTracer``, ``recommend``) does not
expose the network; v1 wraps DKT (``models.dkt``), which models skills. Items are in the
vocabulary only so that items never seen in training can be flagged.

Leak-free rule (same as training and evaluation): consecutive history rows with the same item id
are one attempt (a multi-skill problem is logged once per skill), and a prediction for a row
reads the model's state from before its attempt started. Candidates count as a fresh attempt,
so they read the state after the whole history.

Histories longer than ``max_history`` (the training window, 200 by default) are truncated to
their most recent ``max_history`` rows: ``predict`` and ``mastery`` read the state after those
rows, and ``trace`` returns predictions for those rows only (``len(result) ==
min(len(history), max_history)``, aligned with ``history[-max_history:]``).

Flags on a prediction: ``cold_start`` (no history before it), ``unseen_item`` (item id not in
training data; the skill-level prediction still applies), ``unseen_skill`` (skill id not in
training data; p_correct falls back to that skill's prior if there is one, else the global prior,
the mean correctness of the training rows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.dkt import DKT, DKTConfig
from models.kt_data import Priors, Vocabulary, attempt_context_index

WEIGHTS_FILE = "dkt.pt"
CONFIG_FILE = "dkt_config.json"
VOCAB_FILE = "vocab.json"
PRIORS_FILE = "priors.json"
SKILL_NAMES_FILE = "skill_names.json"
ARTIFACT_FILES = (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, PRIORS_FILE, SKILL_NAMES_FILE)

DEFAULT_MAX_HISTORY = 200
DEFAULT_BAND = (0.70, 0.85)

COLD_START = "cold_start"
UNSEEN_ITEM = "unseen_item"
UNSEEN_SKILL = "unseen_skill"


@dataclass(frozen=True)
class Interaction:
    item_id: str
    skill_id: str
    correct: bool


@dataclass(frozen=True)
class CandidatePrediction:
    item_id: str
    skill_id: str
    p_correct: float
    flags: tuple[str, ...] = ()


class KnowledgeTracer:
    def __init__(
        self,
        model: DKT,
        vocab: Vocabulary,
        priors: Priors,
        skill_names: dict[str, str] | None = None,
        *,
        max_history: int = DEFAULT_MAX_HISTORY,
        device: str = "cpu",
    ) -> None:
        if model.config.num_skills != vocab.num_skills:
            raise ValueError(
                f"model has {model.config.num_skills} skills, vocabulary {vocab.num_skills}"
            )
        if max_history < 1:
            raise ValueError("max_history must be >= 1")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.priors = priors
        self.skill_names = dict(skill_names or {})
        self.max_history = max_history

    # ----------------------------------------------------------------------------- artifact
    @classmethod
    def from_artifact(
        cls, artifact_dir: Path | str, device: str = "cpu", *, max_history: int | None = None
    ) -> KnowledgeTracer:
        """``max_history`` overrides the artifact's window (the API serves up to 1000 steps)."""
        artifact_dir = Path(artifact_dir)
        raw_config = json.loads((artifact_dir / CONFIG_FILE).read_text())
        model = DKT(DKTConfig.from_dict(raw_config["model"]))
        state = torch.load(artifact_dir / WEIGHTS_FILE, map_location=device, weights_only=True)
        model.load_state_dict(state)
        return cls(
            model,
            Vocabulary.from_dict(json.loads((artifact_dir / VOCAB_FILE).read_text())),
            Priors.from_dict(json.loads((artifact_dir / PRIORS_FILE).read_text())),
            json.loads((artifact_dir / SKILL_NAMES_FILE).read_text()),
            max_history=max_history or int(raw_config["max_history"]),
            device=device,
        )

    def save(self, directory: Path | str) -> list[str]:
        """Write the artifact's files into ``directory`` (created if needed); returns names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        config = {"model": self.model.config.to_dict(), "max_history": self.max_history}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab.to_dict()) + "\n")
        (directory / PRIORS_FILE).write_text(json.dumps(self.priors.to_dict(), indent=1) + "\n")
        (directory / SKILL_NAMES_FILE).write_text(
            json.dumps(self.skill_names, indent=1, sort_keys=True) + "\n"
        )
        return list(ARTIFACT_FILES)

    # ------------------------------------------------------------------------------- model
    def _recent(self, history: Sequence[Interaction]) -> Sequence[Interaction]:
        return history[-self.max_history :] if len(history) > self.max_history else history

    @torch.inference_mode()
    def _states(self, history: Sequence[Interaction]) -> torch.Tensor:
        """[T + 1, H]: the initial state, then the state after each history row."""
        skills = torch.tensor(
            [[self.vocab.skill_index(h.skill_id) for h in history]],
            dtype=torch.long,
            device=self.device,
        )
        correct = torch.tensor(
            [[int(bool(h.correct)) for h in history]], dtype=torch.long, device=self.device
        )
        return self.model.states(skills, correct)[0]

    @torch.inference_mode()
    def _skill_probabilities(self, states: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., S + 1] P(correct) for every skill index."""
        return torch.sigmoid(self.model.readout(states))

    def _prediction(
        self, item_id: str, skill_id: str, probs: torch.Tensor, cold: bool
    ) -> CandidatePrediction:
        flags = []
        if cold:
            flags.append(COLD_START)
        if not self.vocab.has_item(item_id):
            flags.append(UNSEEN_ITEM)
        if self.vocab.has_skill(skill_id):
            p = float(probs[self.vocab.skill_index(skill_id)])
        else:
            flags.append(UNSEEN_SKILL)
            p = self.priors.for_skill(skill_id)
        return CandidatePrediction(item_id, skill_id, p, tuple(flags))

    # --------------------------------------------------------------------------------- API
    def predict(
        self, history: Sequence[Interaction], candidates: Sequence[tuple[str, str]]
    ) -> list[CandidatePrediction]:
        """P(correct) for each ``(item_id, skill_id)`` candidate as the learner's next attempt.

        One LSTM pass over the (truncated) history, one output read shared by all candidates.
        """
        history = self._recent(history)
        if not candidates:
            return []
        probs = self._skill_probabilities(self._states(history)[-1]).cpu()  # [S + 1]
        cold = len(history) == 0
        return [self._prediction(item, skill, probs, cold) for item, skill in candidates]

    def trace(self, history: Sequence[Interaction]) -> list[CandidatePrediction]:
        """The leak-free prediction of every (recent) history row from the attempts before it.

        Row t's prediction equals ``predict(h[:s], [(item, skill)])`` where ``h`` is the
        truncated history and ``s`` the first row of row t's attempt. One LSTM pass.
        """
        history = self._recent(history)
        if not history:
            return []
        states = self._states(history)  # [T + 1, H]
        context = attempt_context_index([h.item_id for h in history])
        probs = self._skill_probabilities(
            states[torch.tensor(context, device=states.device) + 1]
        ).cpu()  # [T, S + 1]
        return [
            self._prediction(h.item_id, h.skill_id, probs[t], context[t] == -1)
            for t, h in enumerate(history)
        ]

    def mastery(self, history: Sequence[Interaction]) -> dict[str, float]:
        """P(correct) on each skill in the (truncated) history, after the whole history.

        Skills the model does not know get their prior (else the global prior).
        """
        history = self._recent(history)
        if not history:
            return {}
        probs = self._skill_probabilities(self._states(history)[-1]).cpu()
        out: dict[str, float] = {}
        for h in history:
            if h.skill_id not in out:
                out[h.skill_id] = (
                    float(probs[self.vocab.skill_index(h.skill_id)])
                    if self.vocab.has_skill(h.skill_id)
                    else self.priors.for_skill(h.skill_id)
                )
        return out

    def skill_name(self, skill_id: str) -> str | None:
        return self.skill_names.get(str(skill_id))

    def describe(self) -> dict[str, Any]:
        return {
            "model": "dkt",
            "num_skills": self.vocab.num_skills,
            "num_items": len(self.vocab.items),
            "max_history": self.max_history,
            "global_prior": self.priors.global_prior,
        }


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
