"""Serving-side knowledge tracing: P(correct) for candidate items given a learner's history.

The API (``Interaction``, ``CandidatePrediction``, ``KnowledgeTracer``, ``recommend``) does not
expose the network. Two architectures load: DKT (``models.difficulty.dkt``, v1), which models skills
only (items are in its vocabulary so that unseen ones can be flagged), and the attentive tracer
(``models.difficulty.akt``), which also reads each item's learned difficulty.

Leak-free rule (same as training and evaluation): consecutive history rows with the same item id
are one attempt (a multi-skill problem is logged once per skill), and a prediction for a row
reads the model's state from before its attempt started. Candidates count as a fresh attempt,
so they read the state after the whole history.

Context window. The model reads at most ``max_history`` rows (its training window, 200 for the
shipped models), starting at a multiple of half that: the attempt after ``n`` rows reads rows
``window_start(n, max_history)`` to ``n``. The start moves only every ``max_history // 2``
answers, so between moves a learner's encoded window is extended by the new answers instead of
recomputed (``models.difficulty.encoding_cache``; the result is the same either way), and the window
never holds fewer than half of ``max_history`` rows once the learner has that many. ``trace`` reads
every row through the window its own prediction would use, so step t's value equals ``predict``
on the history before t's attempt.

Where each p_correct comes from (``basis``): ``model`` (the tracer, from the learner's history),
``population`` (the tracer with no history: its learned prior for that skill and item; flagged
``cold_start``), ``skill_prior`` or ``global_prior`` (the skill is unknown to the model, flagged
``unseen_skill``: the training rows' mean correctness on that skill, else overall). An
``unseen_item`` is read on an average item of its skill.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.difficulty.akt import AKT, AKTConfig, EncodedHistory
from models.difficulty.data import Priors, Vocabulary, attempt_context_index
from models.difficulty.dkt import DKT, DKTConfig
from models.difficulty.encoding_cache import NOTHING_CACHED, EncodingCache
from models.difficulty.tracer_api import (  # the torch-free API, re-exported here
    COLD_START,
    CONFIG_FILE,
    DEFAULT_BAND,
    PRIORS_FILE,
    SKILL_NAMES_FILE,
    UNSEEN_ITEM,
    UNSEEN_SKILL,
    VOCAB_FILE,
    CandidatePrediction,
    Interaction,
    TracerAPI,
    as_interactions,
    recommend,
    window_start,
)

__all__ = [  # the shared API is importable from here as before
    "COLD_START",
    "DEFAULT_BAND",
    "UNSEEN_ITEM",
    "UNSEEN_SKILL",
    "CandidatePrediction",
    "Interaction",
    "KnowledgeTracer",
    "as_interactions",
    "recommend",
    "window_start",
]

# The config's (tracer_api.CONFIG_FILE) "architecture" says which network the weights are
# (absent: DKT, v1's format).
WEIGHTS_FILE = "tracer_weights.pt"
# Until 2026-12-01 every artifact was saved as dkt.pt / dkt_config.json, whatever its architecture
# (the shipped v1 and v2 were renamed, weights unchanged); registries elsewhere may still hold
# those names, so the loader falls back to them.
LEGACY_WEIGHTS_FILE = "dkt.pt"
LEGACY_CONFIG_FILE = "dkt_config.json"
ARCHITECTURES: dict[str, tuple[type, type]] = {"dkt": (DKT, DKTConfig), "akt": (AKT, AKTConfig)}
ARTIFACT_FILES = (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, PRIORS_FILE, SKILL_NAMES_FILE)

DEFAULT_MAX_HISTORY = 200
DEFAULT_ENCODING_CACHE_SIZE = 1024  # learners' encoded windows (AKT: ~100 KB each at 200 rows)


class KnowledgeTracer(TracerAPI):
    def __init__(
        self,
        model: DKT | AKT,
        vocab: Vocabulary,
        priors: Priors,
        skill_names: dict[str, str] | None = None,
        *,
        max_history: int = DEFAULT_MAX_HISTORY,
        device: str = "cpu",
        encoding_cache_size: int = DEFAULT_ENCODING_CACHE_SIZE,
    ) -> None:
        """``encoding_cache_size`` 0 turns the cache of encoded windows off."""
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
        self.encoding_cache = EncodingCache(encoding_cache_size) if encoding_cache_size else None

    # ----------------------------------------------------------------------------- artifact
    @classmethod
    def from_artifact(
        cls,
        artifact_dir: Path | str,
        device: str = "cpu",
        *,
        max_history: int | None = None,
        encoding_cache_size: int = DEFAULT_ENCODING_CACHE_SIZE,
    ) -> KnowledgeTracer:
        """``max_history`` overrides the artifact's window (its training window by default)."""
        artifact_dir = Path(artifact_dir)
        weights_file, config_file = WEIGHTS_FILE, CONFIG_FILE
        if not (artifact_dir / config_file).is_file():  # saved before the rename (see above)
            weights_file, config_file = LEGACY_WEIGHTS_FILE, LEGACY_CONFIG_FILE
        raw_config = json.loads((artifact_dir / config_file).read_text())
        network, network_config = ARCHITECTURES[raw_config.get("architecture", "dkt")]
        model = network(network_config.from_dict(raw_config["model"]))
        state = torch.load(artifact_dir / weights_file, map_location=device, weights_only=True)
        model.load_state_dict(state)
        return cls(
            model,
            Vocabulary.from_dict(json.loads((artifact_dir / VOCAB_FILE).read_text())),
            Priors.from_dict(json.loads((artifact_dir / PRIORS_FILE).read_text())),
            json.loads((artifact_dir / SKILL_NAMES_FILE).read_text()),
            max_history=max_history or int(raw_config["max_history"]),
            device=device,
            encoding_cache_size=encoding_cache_size,
        )

    def save(self, directory: Path | str) -> list[str]:
        """Write the artifact's files into ``directory`` (created if needed); returns names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        config = {
            "architecture": self.architecture,
            "model": self.model.config.to_dict(),
            "max_history": self.max_history,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab.to_dict()) + "\n")
        (directory / PRIORS_FILE).write_text(json.dumps(self.priors.to_dict(), indent=1) + "\n")
        (directory / SKILL_NAMES_FILE).write_text(
            json.dumps(self.skill_names, indent=1, sort_keys=True) + "\n"
        )
        return list(ARTIFACT_FILES)

    # ------------------------------------------------------------------------------- model
    def context_window(self, history: Sequence[Interaction]) -> Sequence[Interaction]:
        """The rows the attempt after ``history`` reads (module docstring)."""
        return history[window_start(len(history), self.max_history) :]

    @property
    def architecture(self) -> str:
        return "akt" if isinstance(self.model, AKT) else "dkt"

    def _tensors(self, history: Sequence[Interaction]) -> tuple[torch.Tensor, ...]:
        """(skills, items, correct) as [1, T] long tensors."""
        rows = [
            (self.vocab.skill_index(h.skill_id), self.vocab.item_index(h.item_id), int(h.correct))
            for h in history
        ]
        table = torch.tensor(rows, dtype=torch.long, device=self.device).view(-1, 3)
        return tuple(table[:, i].unsqueeze(0) for i in range(3))

    def _context(self, window: Sequence[Interaction]) -> torch.Tensor:
        return torch.tensor(
            [attempt_context_index([h.item_id for h in window])],
            dtype=torch.long,
            device=self.device,
        ).view(1, -1)

    def _encoded(
        self, window: Sequence[Interaction], tensors: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor] | EncodedHistory:
        """The model's encoding of ``window``: DKT's LSTM memory or AKT's encoded rows, built on
        the longest cached prefix of the window and cached in turn."""
        rows = [(h.item_id, h.skill_id, h.correct) for h in window]
        cache = self.encoding_cache
        known = cache.longest_prefix(rows) if cache is not None and rows else NOTHING_CACHED
        if known.rows and known.rows == len(rows):
            return known.encoding
        skills, items, correct = tensors
        if isinstance(self.model, DKT):
            encoding = self.model.advance(
                skills[:, known.rows :], correct[:, known.rows :], known.encoding
            )
        else:
            encoding = self.model.encode_history(
                skills, items, correct, self._context(window), known=known.encoding
            )
        if cache is not None:
            cache.store(rows, encoding, replaces=known.rows, hashes=known.hashes)
        return encoding

    @torch.inference_mode()
    def _next_attempt_probabilities(
        self, history: Sequence[Interaction], targets: Sequence[tuple[str, str]]
    ) -> list[float]:
        """P(correct) of each ``(item_id, skill_id)`` as the attempt after the whole history.

        Unknown skills give a meaningless value here; callers replace it with a prior.
        """
        window = self.context_window(history)
        tensors = self._tensors(window)
        encoding = self._encoded(window, tensors)
        target_skills = torch.tensor(
            [[self.vocab.skill_index(s) for _, s in targets]], device=self.device
        )
        if isinstance(self.model, DKT):
            probs = torch.sigmoid(self.model.readout(encoding[0][0, 0]))  # [S + 1]
            return probs[target_skills[0]].cpu().tolist()
        target_items = torch.tensor(
            [[self.vocab.item_index(i) for i, _ in targets]], device=self.device
        )
        skills, items, _ = tensors
        logits = self.model.next_attempt_logits(
            skills, items, encoding, target_skills, target_items
        )
        return torch.sigmoid(logits)[0].cpu().tolist()

    @torch.inference_mode()
    def _trace_probabilities(self, history: Sequence[Interaction]) -> list[float]:
        """Each row's leak-free P(correct), read through the window its prediction uses.

        Rows are grouped by that window's start; each group is one causal pass over the rows
        from the start to the group's last row, as in training and evaluation.
        """
        context = attempt_context_index([h.item_id for h in history])
        starts = [window_start(c + 1, self.max_history) for c in context]
        probs: list[float] = []
        t = 0
        while t < len(history):
            start, end = starts[t], t
            while end < len(history) and starts[end] == start:
                end += 1
            window = history[start:end]
            skills, items, correct = self._tensors(window)
            logits, _ = self.model(skills, correct, self._context(window), items=items)
            probs += torch.sigmoid(logits)[0, t - start :].cpu().tolist()
            t = end
        return probs

    # --------------------------------------------------------------------------------- API
    def describe(self) -> dict[str, Any]:
        return {
            "model": self.architecture,
            "num_skills": self.vocab.num_skills,
            "num_items": len(self.vocab.items),
            "max_history": self.max_history,
            "global_prior": self.priors.global_prior,
            "encoding_cache": self.encoding_cache.stats()
            if self.encoding_cache is not None
            else None,
        }
