"""A learned decision rule from the emotion encoder to the tutor's eight learning states.

GoEmotions' 28 labels miss what matters in a classroom: "where did the 2 come from?" scores as
curiosity, and "I'm just not smart enough" splits between anger and sadness. The fixed share-out
of ``models.emotion.learning_states`` cannot separate these; a multinomial logistic regression over
the fine-tuned encoder's pooled embedding and its 28 label logits can, trained on labelled learner
messages (``tests/data/learner_messages_train.jsonl``; fitted by
``pipelines.emotion.train_state_head``).

Inference is plain numpy: standardise, one affine map, softmax. Stored in the artifact as
``state_head.npz`` (float32, ~14 KB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.common.vocab import LEARNING_STATES

STATE_HEAD_FILE = "state_head.npz"
FEATURES = "pooled embedding [384] ++ raw label logits [28]"


def state_features(pooled: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """What the head reads, in one place for training and serving."""
    return np.hstack([np.asarray(pooled, np.float64), np.asarray(logits, np.float64)])


@dataclass(frozen=True)
class StateHead:
    mean: np.ndarray  # [d] feature means on the training set
    scale: np.ndarray  # [d] feature standard deviations (never 0)
    coef: np.ndarray  # [8, d] in LEARNING_STATES order
    intercept: np.ndarray  # [8]

    def __post_init__(self) -> None:
        k, d = self.coef.shape
        if k != len(LEARNING_STATES) or self.mean.shape != (d,) or self.scale.shape != (d,):
            raise ValueError(f"inconsistent state head shapes: coef {self.coef.shape}")
        if self.intercept.shape != (k,) or (self.scale <= 0).any():
            raise ValueError("state head needs 8 intercepts and positive scales")

    @property
    def input_dim(self) -> int:
        return self.coef.shape[1]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Features [n, d] -> a distribution over the eight states [n, 8]."""
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        z = x @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / STATE_HEAD_FILE
        np.savez(
            path,
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            coef=self.coef.astype(np.float32),
            intercept=self.intercept.astype(np.float32),
            states=np.array(LEARNING_STATES),
        )
        return path

    @classmethod
    def load(cls, directory: Path | str) -> StateHead:
        with np.load(Path(directory) / STATE_HEAD_FILE, allow_pickle=False) as blob:
            if tuple(blob["states"].tolist()) != LEARNING_STATES:
                raise ValueError(f"state head trained for states {blob['states'].tolist()}")
            return cls(
                mean=blob["mean"].astype(np.float64),
                scale=blob["scale"].astype(np.float64),
                coef=blob["coef"].astype(np.float64),
                intercept=blob["intercept"].astype(np.float64),
            )

    @staticmethod
    def exists(directory: Path | str) -> bool:
        return (Path(directory) / STATE_HEAD_FILE).is_file()
