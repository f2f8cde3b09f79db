"""DKT (Piech et al., 2015): an LSTM over (skill, response) pairs with per-skill outputs.

Leak-free reading: the LSTM state is computed after every row, and a row's prediction reads the
state after its *context* row (see :func:`models.difficulty.data.attempt_context_index`): the last
row before the start of its attempt, or the initial state. Training and evaluation use the same
gather, so the model never learns to rely on a sibling row's response.

Shapes: B batch, T rows (time), H hidden size, E embedding size, S number of known skills
(model skill indices run 1..S; index 0 is "unknown skill" and padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from models.difficulty.data import (
    StudentSequence,
    Vocabulary,
    attempt_context_index,
    per_row_context_index,
)


class SerializableConfig:
    """``to_dict``/``from_dict`` for the tracers' frozen config dataclasses; keys the class no
    longer has are ignored and missing ones take their defaults, so older artifacts load."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        return cls(**{k: raw[k] for k in fields if k in raw})


@dataclass(frozen=True)
class DKTConfig(SerializableConfig):
    num_skills: int  # S: known skills; the output layer has S + 1 entries (0: unknown)
    hidden_size: int = 100
    embedding_dim: int = 64
    dropout: float = 0.4
    temperature: float = 1.0  # logits are divided by it (fitted on valid after training)


class DKT(nn.Module):
    def __init__(self, config: DKTConfig) -> None:
        super().__init__()
        self.config = config
        # Input token = skill * 2 + correct; tokens 0 and 1 (unknown skill) are zeroed in encode().
        self.embedding = nn.Embedding(2 * (config.num_skills + 1), config.embedding_dim)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.num_skills + 1)

    def hidden_states(self, skills: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        """Hidden state before any row and after each row.

        skills, correct: [B, T] long -> [B, T + 1, H]; index 0 is the initial (zero) state,
        index t + 1 the state after row t. Padding must come after the real rows (the LSTM is
        causal, so trailing padding never changes the real rows' states).
        """
        if skills.shape[1] == 0:  # no rows: only the initial state (nn.LSTM rejects T = 0)
            return self.embedding.weight.new_zeros(skills.shape[0], 1, self.config.hidden_size)
        h, _ = self.lstm(self._inputs(skills, correct))  # [B, T, H]
        h0 = h.new_zeros(h.shape[0], 1, h.shape[2])  # the LSTM's own (zero) initial state
        return torch.cat([h0, h], dim=1)  # [B, T + 1, H]

    def advance(
        self,
        skills: torch.Tensor,
        correct: torch.Tensor,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM's (h, c) after ``memory`` (None: the initial state) and then the rows
        ``skills, correct`` [1, T]: a learner's state extended by new answers without
        re-reading the old ones. ``h[0, 0]`` equals ``states(...)[0, -1]`` over all rows."""
        if memory is None:
            zeros = self.embedding.weight.new_zeros(1, skills.shape[0], self.config.hidden_size)
            memory = (zeros, zeros.clone())
        if skills.shape[1] == 0:
            return memory
        _, (h, c) = self.lstm(self._inputs(skills, correct), memory)
        return h, c

    def _inputs(self, skills: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        tokens = skills * 2 + correct  # [B, T]
        return self.embedding(tokens) * (skills > 0).unsqueeze(-1).to(self.embedding.weight.dtype)

    def readout(self, states: torch.Tensor) -> torch.Tensor:
        """Per-skill logits from states: [..., H] -> [..., S + 1]."""
        return self.output(self.dropout(states)) / self.config.temperature

    def forward(
        self,
        skills: torch.Tensor,
        correct: torch.Tensor,
        context_index: torch.Tensor,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        items: torch.Tensor | None = None,  # accepted for a common interface; DKT is skill-level
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logit of each row's own skill, read from the state after its context row.

        skills, correct: [B, T] long (the rows' inputs; also the rows' target skills).
        context_index: [B, T] long, -1 for the initial state (see attempt_context_index).
        targets: [B, T] float 0/1, usually ``correct``; mask: [B, T] bool, rows that count.
        Returns (logits [B, T], mean BCE loss over masked rows or None without targets).
        """
        states = self.hidden_states(skills, correct)  # [B, T + 1, H]
        gather = (context_index + 1).unsqueeze(-1).expand(-1, -1, states.shape[-1])  # [B, T, H]
        context_states = states.gather(1, gather)  # [B, T, H]
        all_logits = self.readout(context_states)  # [B, T, S + 1]
        logits = all_logits.gather(2, skills.unsqueeze(-1)).squeeze(-1)  # [B, T]
        loss = None if targets is None else masked_bce(logits, targets, mask, skills)
        return logits, loss


def masked_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    skills: torch.Tensor,
) -> torch.Tensor:
    """Mean binary cross-entropy over the real rows (``mask``) whose skill is known."""
    keep = skills > 0 if mask is None else mask & (skills > 0)
    return F.binary_cross_entropy_with_logits(logits[keep], targets[keep].float())


@dataclass(frozen=True)
class EncodedBatch:
    skills: torch.Tensor  # [B, T] long, 0 for padding / unknown skill
    correct: torch.Tensor  # [B, T] long
    context_index: torch.Tensor  # [B, T] long, -1 = initial state
    mask: torch.Tensor  # [B, T] bool, real rows
    items: torch.Tensor  # [B, T] long, 0 for padding / unknown item (DKT ignores them)

    def to(self, device: str | torch.device) -> EncodedBatch:
        return EncodedBatch(
            *(
                t.to(device)
                for t in (self.skills, self.correct, self.context_index, self.mask, self.items)
            )
        )


def encode_batch(
    sequences: Sequence[StudentSequence], vocab: Vocabulary, *, protocol: str = "attempt"
) -> EncodedBatch:
    """Pad sequences (at the end) into tensors.

    protocol "attempt" (leak-free): context from attempt_context_index; "row" (leaky, as early
    DKT papers did): every row sees all rows before it, siblings of a multi-skill problem too.
    """
    if protocol not in ("attempt", "row"):
        raise ValueError(f"protocol must be 'attempt' or 'row', got {protocol!r}")
    width = max((len(s) for s in sequences), default=0)
    b = len(sequences)
    skills = torch.zeros(b, width, dtype=torch.long)
    correct = torch.zeros(b, width, dtype=torch.long)
    items = torch.zeros(b, width, dtype=torch.long)
    context = torch.full((b, width), -1, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        n = len(seq)
        skills[i, :n] = torch.tensor([vocab.skill_index(s) for s in seq.skill_ids])
        correct[i, :n] = torch.tensor(seq.correct)
        items[i, :n] = torch.tensor([vocab.item_index(item) for item in seq.item_ids])
        ctx = (
            attempt_context_index(seq.item_ids)
            if protocol == "attempt"
            else per_row_context_index(n)
        )
        context[i, :n] = torch.tensor(ctx)
        mask[i, :n] = True
    return EncodedBatch(
        skills=skills, correct=correct, context_index=context, mask=mask, items=items
    )
