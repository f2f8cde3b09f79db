"""A transformers causal LM as a chat provider: chat messages in, text pieces out as generated.

Any causal LM saved with ``save_pretrained`` (weights and tokenizer in one folder) works. The
prompt uses the tokenizer's chat template when it has one, else plain ``role: text`` lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from threading import Thread

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class LocalLM:
    def __init__(self, model_path: Path | str, device: str = "cpu") -> None:
        self.name = Path(model_path).name
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path).to(self.device).eval()

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> torch.Tensor:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt"
            )
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            ids = self.tokenizer(text, return_tensors="pt").input_ids
        return ids.to(self.device)

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_new_tokens: int, temperature: float
    ) -> Iterator[str]:
        """Text pieces as they are generated (generation runs in a thread of its own)."""
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60.0
        )
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        options = {
            "input_ids": self.prompt_ids(messages),
            "max_new_tokens": max_new_tokens,
            "do_sample": temperature > 0,
            "streamer": streamer,
            "pad_token_id": pad,
        }
        if temperature > 0:
            options["temperature"] = temperature
        worker = Thread(target=self._generate, kwargs=options, daemon=True)
        worker.start()
        for text in streamer:
            if text:
                yield text
        worker.join()

    @torch.inference_mode()
    def _generate(self, **options) -> None:
        self.model.generate(**options)
