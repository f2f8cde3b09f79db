"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from models.emotion.encoder import minilm_dir


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A randomly initialised one-layer GPT-2 saved as a causal LM folder (a local provider)."""
    path = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())  # any tokenizer on disk will do
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=1,
        n_head=2,
        # No end token: a random model would stop at it by chance, with an empty reply.
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
