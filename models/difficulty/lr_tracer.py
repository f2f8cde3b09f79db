"""The served logistic-regression knowledge tracer (architecture ``lr``): Best-LR-style features.

Same API as ``models.difficulty.tracer.KnowledgeTracer`` (``predict``, ``trace``, ``mastery``,
``skill_name``, ``describe``, ``context_window``, ``save``, ``from_artifact``), the same
``CandidatePrediction`` flags and basis, the same leak-free rule; no torch. P(correct) is
``sigmoid((x . coef + intercept) / temperature)`` where ``x`` is the sparse feature row of
``models.difficulty.lr_features`` read from the learner's state before the attempt.

Context. The features count the learner's whole stored history (up to ``max_history`` rows,
the serving store's ``MAX_HISTORY``, 1,000): unlike the neural tracers' 200-row windows, old
answers are cheap to keep as counts, and the model was fitted on counts over each training
learner's whole sequence. Past ``max_history`` rows the start moves in steps of half of it, the
rule of ``tracer.window_start``, so the cached state can still be extended between moves.

Incremental. A learner's next request usually carries the same history plus one answer: a
per-instance LRU (``models.difficulty.encoding_cache.EncodingCache``, keyed by the rows
themselves as for the attentive tracer) holds learners' states, and a hit on a prefix is
extended by the new rows only. Cached or not, the state is the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.difficulty.data import Priors, Vocabulary, attempt_context_index
from models.difficulty.encoding_cache import NOTHING_CACHED, EncodingCache
from models.difficulty.lr_features import FeatureSpec, LearnerState
from models.difficulty.lr_tables import EMPTY_TABLES, TABLES_FILE, ItemTables
from models.difficulty.tracer_api import (
    CONFIG_FILE,
    PRIORS_FILE,
    SKILL_NAMES_FILE,
    VOCAB_FILE,
    Interaction,
    TracerAPI,
    window_start,
)

ARCHITECTURE = "lr"
COEFFICIENTS_FILE = "lr_coefficients.npy"
ARTIFACT_FILES = (
    COEFFICIENTS_FILE,
    CONFIG_FILE,
    VOCAB_FILE,
    PRIORS_FILE,
    SKILL_NAMES_FILE,
    TABLES_FILE,
)
DEFAULT_MAX_HISTORY = 1000  # deployments.schemas.v1.MAX_HISTORY: the stored history
DEFAULT_STATE_CACHE_SIZE = 4096  # learners' states (a few KB each)


class LinearModel:
    """Coefficients over the raw feature columns, an intercept and a temperature."""

    def __init__(self, coef: np.ndarray, intercept: float, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.coef = np.asarray(coef, dtype=np.float64).ravel()
        self.intercept = float(intercept)
        self.temperature = float(temperature)

    def raw_logits(self, matrix: Any) -> np.ndarray:
        """Logits at temperature 1 of a (sparse) feature matrix's rows."""
        return np.asarray(matrix @ self.coef).ravel() + self.intercept

    def probabilities(self, matrix: Any) -> np.ndarray:
        return _sigmoid(self.raw_logits(matrix) / self.temperature)

    def row_probabilities(self, rows: Sequence[tuple[list[int], list[float]]]) -> list[float]:
        """P(correct) of feature rows given as (columns, values)."""
        out = []
        for cols, vals in rows:
            z = self.intercept + float(np.dot(self.coef[cols], vals)) if cols else self.intercept
            out.append(1.0 / (1.0 + math.exp(-z / self.temperature)))
        return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings at large |z|


class LRTracer(TracerAPI):
    architecture = ARCHITECTURE

    def __init__(
        self,
        spec: FeatureSpec,
        model: LinearModel,
        vocab: Vocabulary,
        priors: Priors,
        skill_names: dict[str, str] | None = None,
        tables: ItemTables = EMPTY_TABLES,
        *,
        max_history: int = DEFAULT_MAX_HISTORY,
        state_cache_size: int = DEFAULT_STATE_CACHE_SIZE,
    ) -> None:
        """``state_cache_size`` 0 turns the cache of learners' states off."""
        if spec.num_skills != vocab.num_skills or spec.num_items != len(vocab.items):
            raise ValueError(
                f"features for {spec.num_skills} skills / {spec.num_items} items, vocabulary "
                f"{vocab.num_skills} / {len(vocab.items)}"
            )
        if model.coef.size != spec.num_features:
            raise ValueError(f"{model.coef.size} coefficients for {spec.num_features} features")
        if max_history < 1:
            raise ValueError("max_history must be >= 1")
        self.spec = spec
        self.model = model
        self.vocab = vocab
        self.priors = priors
        self.skill_names = dict(skill_names or {})
        self.tables = tables
        self.max_history = max_history
        self.state_cache = EncodingCache(state_cache_size) if state_cache_size else None

    # ----------------------------------------------------------------------------- artifact
    @classmethod
    def from_artifact(
        cls,
        artifact_dir: Path | str,
        device: str = "cpu",
        *,
        max_history: int | None = None,
        encoding_cache_size: int = DEFAULT_STATE_CACHE_SIZE,
    ) -> LRTracer:
        """``device`` is accepted for ``KnowledgeTracer``'s callers and ignored (CPU only);
        ``encoding_cache_size`` sizes the state cache."""
        artifact_dir = Path(artifact_dir)
        config = json.loads((artifact_dir / CONFIG_FILE).read_text())
        if config.get("architecture") != ARCHITECTURE:
            raise ValueError(f"{artifact_dir} holds a {config.get('architecture')!r} tracer")
        tables_path = artifact_dir / TABLES_FILE
        model = LinearModel(
            np.load(artifact_dir / COEFFICIENTS_FILE),
            config["intercept"],
            config["temperature"],
        )
        return cls(
            FeatureSpec.from_dict(config["features"]),
            model,
            Vocabulary.from_dict(json.loads((artifact_dir / VOCAB_FILE).read_text())),
            Priors.from_dict(json.loads((artifact_dir / PRIORS_FILE).read_text())),
            json.loads((artifact_dir / SKILL_NAMES_FILE).read_text()),
            ItemTables.from_dict(json.loads(tables_path.read_text()))
            if tables_path.is_file()
            else EMPTY_TABLES,
            max_history=max_history or int(config["max_history"]),
            state_cache_size=encoding_cache_size,
        )

    def save(self, directory: Path | str) -> list[str]:
        """Write the artifact's files into ``directory`` (created if needed); returns names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / COEFFICIENTS_FILE, self.model.coef.astype(np.float32))
        config = {
            "architecture": ARCHITECTURE,
            "features": self.spec.to_dict(),
            "intercept": self.model.intercept,
            "temperature": self.model.temperature,
            "max_history": self.max_history,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab.to_dict()) + "\n")
        (directory / PRIORS_FILE).write_text(json.dumps(self.priors.to_dict(), indent=1) + "\n")
        (directory / SKILL_NAMES_FILE).write_text(
            json.dumps(self.skill_names, indent=1, sort_keys=True) + "\n"
        )
        (directory / TABLES_FILE).write_text(json.dumps(self.tables.to_dict()) + "\n")
        return list(ARTIFACT_FILES)

    # -------------------------------------------------------------------------------- state
    def context_window(self, history: Sequence[Interaction]) -> Sequence[Interaction]:
        """The rows the attempt after ``history`` reads (module docstring)."""
        return history[window_start(len(history), self.max_history) :]

    def _state(self, window: Sequence[Interaction]) -> LearnerState:
        """The learner's state after ``window`` (the newest attempt open), built on the longest
        cached prefix and cached in turn. The returned state must not be changed."""
        rows = [(h.item_id, h.skill_id, bool(h.correct)) for h in window]
        cache = self.state_cache
        known = cache.longest_prefix(rows) if cache is not None and rows else NOTHING_CACHED
        if known.rows and known.rows == len(rows):
            return known.encoding
        # A copy: the cached state may be read by another request meanwhile.
        state = known.encoding.copy() if known.rows else LearnerState(self.spec, self.tables)
        for item_id, skill_id, correct in rows[known.rows :]:
            state.add(item_id, skill_id, correct)
        if cache is not None and rows:
            cache.store(rows, state, replaces=known.rows, hashes=known.hashes)
        return state

    def _next_attempt_probabilities(
        self, history: Sequence[Interaction], targets: Sequence[tuple[str, str]]
    ) -> list[float]:
        """P(correct) of each ``(item_id, skill_id)`` as the attempt after the whole history."""
        state = self._state(self.context_window(history)).closed()
        return self.model.row_probabilities(
            [state.row(self.vocab, item, skill) for item, skill in targets]
        )

    def _trace_probabilities(self, history: Sequence[Interaction]) -> list[float]:
        return self.model.row_probabilities(self.trace_rows(history))

    def trace_rows(self, history: Sequence[Interaction]) -> list[tuple[list[int], list[float]]]:
        """Each row's leak-free feature row (columns, values), from the state before its attempt
        in the window its own prediction would read (one pass per window start)."""
        context = attempt_context_index([h.item_id for h in history])
        rows: list[tuple[list[int], list[float]]] = []
        state, start = LearnerState(self.spec, self.tables), 0
        fed = 0  # rows of history added to state
        for t, h in enumerate(history):
            attempt_start = context[t] + 1
            wanted = window_start(attempt_start, self.max_history)
            if wanted != start:
                state, start, fed = LearnerState(self.spec, self.tables), wanted, wanted
            while fed < attempt_start:
                state.add(history[fed].item_id, history[fed].skill_id, history[fed].correct)
                fed += 1
            state.start(h.item_id)
            rows.append(state.row(self.vocab, h.item_id, h.skill_id))
        return rows

    # ---------------------------------------------------------------------------------- API
    def describe(self) -> dict[str, Any]:
        return {
            "model": self.architecture,
            "num_skills": self.vocab.num_skills,
            "num_items": len(self.vocab.items),
            "num_features": self.spec.num_features,
            "feature_groups": list(self.spec.groups),
            "max_history": self.max_history,
            "global_prior": self.priors.global_prior,
            "temperature": self.model.temperature,
            "encoding_cache": self.state_cache.stats() if self.state_cache is not None else None,
        }
