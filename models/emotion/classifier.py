"""The served emotion model: texts -> GoEmotions' 28 label scores and the tutor's 8 learning states.

``EmotionClassifier.from_artifact`` loads either artifact format (``models.emotion.artifact``):
v1, a frozen encoder + MLP head, or v2, MiniLM with LoRA adapters (merged into the encoder at
load time, so serving runs a plain BERT forward) + a linear head. A fine-tuned artifact runs on
torch (``backend="torch"``, the default for fp32 versions) or on ONNX Runtime
(``backend="onnx"``, ``models.emotion.onnx_scorer``: the same outputs within float noise,
exported once and cached); an int8 version (``models.emotion.quantization``) runs on ONNX
Runtime by default.

Scores are ``sigmoid(logits / temperature)`` (temperature fitted on dev; 1.0 for v1), and a label
is predicted when its score reaches its threshold (tuned on dev on those same scores). The eight
learning states come from the artifact's state head when it has one (``models.emotion.state_head``,
trained on learner messages), else from the fixed 28 -> 8 rule of
``models.emotion.learning_states``; the state distribution is then sharpened or softened by the
artifact's state temperature (1.0 if it has none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from models.common.vocab import GOEMOTIONS_LABELS, LEARNING_STATES
from models.emotion.artifact import (
    ARTIFACT_FORMAT_V1,
    ARTIFACT_FORMAT_V2,
    detect_format,
    load_head,
    load_model,
    load_state_temperature,
    load_thresholds,
)
from models.emotion.encoder import SentenceEncoder, load_tokenizer
from models.emotion.learning_states import EKMAN_LABELS, calibrate_states, states_from_scores
from models.emotion.quantization import read_recipe
from models.emotion.scorers import FineTunedScorer, FrozenEncoderScorer, sigmoid
from models.emotion.state_head import StateHead, state_features

if TYPE_CHECKING:
    from models.emotion.onnx_scorer import OnnxScorer

logger = logging.getLogger(__name__)
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class EmotionPrediction:
    state: str  # the most probable learning state
    confidence: float  # its probability
    states: dict[str, float]  # distribution over the 8 learning states (sums to 1)
    scores: dict[str, float]  # calibrated sigmoid score per GoEmotions label
    predicted: list[str]  # labels whose score reaches their tuned threshold


class EmotionClassifier:
    def __init__(
        self,
        scorer: FrozenEncoderScorer | FineTunedScorer | OnnxScorer,
        thresholds: np.ndarray | list[float],
        *,
        ekman_thresholds: np.ndarray | list[float] | None = None,
        temperature: float = 1.0,
        state_temperature: float = 1.0,
        state_head: StateHead | None = None,
        artifact_format: int = ARTIFACT_FORMAT_V1,
    ) -> None:
        if state_head is not None and not hasattr(scorer, "outputs"):
            raise TypeError("a state head reads the fine-tuned encoder's pooled embedding")
        self.scorer = scorer
        # Learner states from a head trained on learner text; None: the fixed 28 -> 8 rule.
        self.state_head = state_head
        # Calibrates the eight-state distribution (fitted on learner text, not on GoEmotions).
        self.state_temperature = float(state_temperature)
        self.artifact_format = artifact_format
        self.temperature = float(temperature)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if self.thresholds.shape != (len(GOEMOTIONS_LABELS),):
            raise ValueError(
                f"need {len(GOEMOTIONS_LABELS)} thresholds; got {self.thresholds.shape}"
            )
        self.ekman_thresholds = (
            np.asarray(ekman_thresholds, dtype=np.float64)
            if ekman_thresholds is not None
            else np.full(len(EKMAN_LABELS), 0.5)
        )

    @classmethod
    def from_artifact(
        cls,
        artifact_dir: Path | str,
        *,
        backend: Literal["torch", "onnx"] | None = None,
        threads: int | None = None,
        encoder_dir: Path | None = None,
        device: str = "cpu",
        onnx_cache_dir: Path | str | None = None,
        quantization: dict | None = None,
    ) -> EmotionClassifier:
        """Load a v1 (head only) or v2 (LoRA adapter + head + temperature) artifact.

        ``backend="onnx"`` runs the fine-tuned encoder on ONNX Runtime (v2 and later only) with
        ``threads`` intra-op threads; with torch, ``threads`` sets torch's (process-wide)
        thread count, and None leaves both at their defaults.

        ``backend=None`` runs the version on its own runtime: ONNX Runtime for an int8 version
        (``quantization.json``, ``models.emotion.quantization``), torch for the others. An int8
        version asked for on torch runs the fp32 weights it was quantized from, with a
        warning, since its state head was fitted on the int8 encoder's features.
        ``quantization`` runs an fp32 version with that recipe instead (how such a head is fitted).
        """
        artifact_dir = Path(artifact_dir)
        recipe = quantization if quantization is not None else read_recipe(artifact_dir)
        if backend is None:
            backend = "onnx" if recipe is not None else "torch"
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        head = load_head(artifact_dir)
        thresholds = load_thresholds(artifact_dir)
        fmt = detect_format(artifact_dir)
        scorer: FrozenEncoderScorer | FineTunedScorer | OnnxScorer
        if backend == "onnx":
            from models.emotion.onnx_scorer import OnnxScorer

            # Raises a clear error for a v1 artifact (it has no fine-tuned encoder to export).
            scorer = OnnxScorer.from_artifact(
                artifact_dir, threads=threads, cache_dir=onnx_cache_dir, encoder_dir=encoder_dir,
                quantization=recipe,
            )  # fmt: skip
        else:
            if recipe is not None:
                logger.warning(
                    "%s: int8 weights run on ONNX Runtime only; torch runs the fp32 weights, "
                    "whose states may differ on close calls from the version's own",
                    artifact_dir,
                )
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            if fmt == ARTIFACT_FORMAT_V2:
                model = load_model(artifact_dir, encoder_dir=encoder_dir, head=head).merge()
                scorer = FineTunedScorer(model, load_tokenizer(encoder_dir), device=device)
            else:
                encoder = SentenceEncoder(encoder_dir, device=device)
                scorer = FrozenEncoderScorer(encoder, head, device)
        return cls(
            scorer,
            thresholds.labels,
            ekman_thresholds=thresholds.ekman,
            temperature=thresholds.temperature,
            state_temperature=load_state_temperature(artifact_dir),
            state_head=StateHead.load(artifact_dir) if StateHead.exists(artifact_dir) else None,
            artifact_format=fmt,
        )

    def predict_logits(self, texts: list[str]) -> np.ndarray:
        """Texts -> raw (uncalibrated) logits [n, 28], float64."""
        if not texts:
            return np.zeros((0, len(GOEMOTIONS_LABELS)))
        return self.scorer.logits(texts)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> temperature-scaled sigmoid scores in [0, 1]."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        """Texts -> calibrated scores [n, 28]."""
        return self.calibrate(self.predict_logits(texts))

    def predict_states(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(label scores [n, 28], state distribution [n, 8] before the state temperature).

        The states come from the artifact's state head when it has one, else from the fixed
        rule (``states_from_scores`` with the tuned thresholds).
        """
        if self.state_head is None:
            return self._scores_and_states(self.predict_logits(texts), None)
        if not texts:
            return np.zeros((0, len(GOEMOTIONS_LABELS))), np.zeros((0, len(LEARNING_STATES)))
        return self._scores_and_states(*self.scorer.outputs(texts))

    def _scores_and_states(
        self, logits: np.ndarray, pooled: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.calibrate(logits)
        if self.state_head is None:
            return scores, states_from_scores(scores, self.thresholds)
        return scores, self.state_head.probabilities(state_features(pooled, logits))

    def predict(self, texts: list[str]) -> list[EmotionPrediction]:
        """One prediction per text, in order; a text scores the same alone or in a batch."""
        return self._predictions(*self.predict_states(texts))

    def predict_outputs(self, logits: np.ndarray, pooled: np.ndarray) -> list[EmotionPrediction]:
        """``predict`` from the encoder's raw outputs (logits [n, 28], pooled [n, 384]) computed
        elsewhere, e.g. by the same file on another CPU: this version's head, thresholds and
        temperatures."""
        return self._predictions(*self._scores_and_states(logits, pooled))

    def _predictions(self, scores: np.ndarray, raw_states: np.ndarray) -> list[EmotionPrediction]:
        if len(scores) == 0:
            return []
        states = calibrate_states(raw_states, self.state_temperature)
        best = states.argmax(axis=1)
        predictions = []
        for row, state_row, b in zip(scores, states, best, strict=True):
            predictions.append(
                EmotionPrediction(
                    state=LEARNING_STATES[b],
                    confidence=float(state_row[b]),
                    states={s: float(p) for s, p in zip(LEARNING_STATES, state_row, strict=True)},
                    scores={lb: float(v) for lb, v in zip(GOEMOTIONS_LABELS, row, strict=True)},
                    predicted=[
                        lb
                        for lb, v, t in zip(GOEMOTIONS_LABELS, row, self.thresholds, strict=True)
                        if v >= t
                    ],
                )
            )
        return predictions
