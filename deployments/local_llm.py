"""Local LLM deployment: a transformers causal LM from a folder, the router's ``local`` provider.

On its own deployment so it scales and is placed apart from the router: on a GPU when the
cluster has one (``placement.LocalLM.gpu_ray_actor_options``), else on CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import torch

from models.llm.local_lm import LocalLM

_END = object()


class LocalLMDeployment:
    def __init__(self, *, model_path: str, torch_threads: int = 1) -> None:
        torch.set_num_threads(max(1, torch_threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._lm = LocalLM(model_path, device=device)

    async def stream(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        pieces = self._lm.stream(messages, max_new_tokens=max_tokens, temperature=temperature)
        # Each next() blocks until the model has generated more text: off the event loop.
        while (text := await asyncio.to_thread(next, pieces, _END)) is not _END:
            yield text

    def model_version(self) -> str:
        return self._lm.name
