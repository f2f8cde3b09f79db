"""Texts -> per-label logits [n, 28], one scorer per artifact format.

* ``FrozenEncoderScorer`` (v1): frozen, L2-normalised MiniLM sentence embeddings -> ``EmotionHead``.
* ``FineTunedScorer`` (v2 and later): token ids in batches grouped by token count ->
  ``EmotionModel``; it also gives the pooled embedding that the learner-state head reads.

``model_outputs`` is the batched forward pass that training (dev logits after each epoch) and
serving share, so both measure the same numbers. Logits are float64 numpy arrays in the order of
the texts; ``sigmoid`` turns them into scores.
"""

from __future__ import annotations

import numpy as np
import torch

from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.batching import token_batches
from models.emotion.encoder import SentenceEncoder
from models.emotion.model import EmotionHead, EmotionModel


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class FrozenEncoderScorer:
    """v1: texts -> frozen sentence embeddings -> head logits."""

    def __init__(self, encoder: SentenceEncoder, head: EmotionHead, device: str = "cpu") -> None:
        self.encoder = encoder
        self.device = torch.device(device)
        self.head = head.to(self.device).eval()

    def logits(self, texts: list[str]) -> np.ndarray:
        embeddings = self.encoder.encode(texts)  # [n, 384], L2-normalised
        with torch.inference_mode():
            logits, _ = self.head(embeddings.to(self.device))
        return logits.double().cpu().numpy()


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

    Padding never changes a row: texts are grouped by token count (``models.emotion.batching``:
    less compute spent on padding) and mean pooling ignores padding.
    """
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string")
    logits_out = np.zeros((len(texts), len(GOEMOTIONS_LABELS)))
    pooled_out = np.zeros((len(texts), model.config.head.input_dim))
    if not texts:
        return logits_out, pooled_out
    was_training = model.training
    model.eval()
    batches = token_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size)
    with torch.inference_mode():
        for idx, input_ids, attention_mask in batches:
            ids = torch.from_numpy(input_ids).to(device)
            mask = torch.from_numpy(attention_mask).to(device)
            pooled = model.pool(ids, mask)
            logits, _ = model.head(pooled)
            logits_out[idx] = logits.double().cpu().numpy()
            pooled_out[idx] = pooled.double().cpu().numpy()
    model.train(was_training)
    return logits_out, pooled_out


def model_logits(model: EmotionModel, tokenizer, texts: list[str], **kwargs) -> np.ndarray:
    """Logits [n, 28] (float64, in the order of ``texts``); see ``model_outputs``."""
    return model_outputs(model, tokenizer, texts, **kwargs)[0]
