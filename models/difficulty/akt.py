"""An attentive knowledge tracer in the AKT family (Ghosh et al., KDD 2020), leak-free.

As in AKT:

* Rasch-model embeddings. A row's question embedding is ``x = c_skill + mu_item * d_skill`` and
  its interaction embedding ``y = e_(skill, response) + mu_item * f_(skill, response)``: one
  learned scalar difficulty ``mu`` per item (problem), shared by its skills, with L2 on it so
  that rarely seen items stay near their skill. Datasets without item ids use ``mu = 0``.
* Three attention blocks with monotonic attention (each head's score is lowered by
  ``theta_h * distance``, ``theta_h >= 0`` learned, so older rows fade unless their content
  keeps them relevant): a question encoder (each question in the context of the questions up to
  it), a knowledge encoder (each answer in the context of the answers up to it), and a
  knowledge retriever (the question to predict attends to earlier encoded questions as keys and
  encoded answers as values).
* Prediction from ``[retrieved knowledge, encoded question]`` through an MLP; optionally minus a
  per-item difficulty (``item_bias``).

Simplified: one block of each kind. AKT's own choices are options, each measured against the
simpler default (README): context-aware distance (``decay``), the output reading the Rasch
embedding (``output_reads``) through two hidden layers (``output_layers``), and one projection
for queries and keys (``shared_query_key``).

Leak-free rule: the retriever lets row ``t`` see rows ``s <= context_index[t]`` (the last row
before its attempt; ``models.difficulty.data.attempt_context_index``), plus a learned "no history"
slot, so the first attempt has something to read; distances count from the attempt's first row. The
question encoder lets a row see earlier attempts' questions and itself; the knowledge encoder
is causal (row ``s`` sees answers up to ``s``) and feeds only later attempts.

Shapes: B batch, T rows, D model size, H heads, S known skills, Q known items (index 0 of both
is unknown / padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.difficulty.dkt import SerializableConfig, masked_bce


@dataclass(frozen=True)
class AKTConfig(SerializableConfig):
    num_skills: int  # S
    num_items: int  # Q; 0 = no item ids (no Rasch difficulty)
    d_model: int = 64
    num_heads: int = 4
    ffn_dim: int = 128
    dropout: float = 0.2
    rasch_l2: float = 1e-5  # AKT's L2 on the item difficulties (per batch, on the summed loss)
    item_bias: bool = False  # also subtract a per-item difficulty from the output logit
    # "rows": score - theta * rows apart. "context": AKT's own, score * exp(-theta * sqrt(d)),
    # d = rows apart times the attention the query gives to the rows between (context-aware).
    decay: str = "rows"
    # What the output MLP reads beside the retrieved knowledge: the "encoded" question, or the
    # Rasch "embedding" x itself (AKT's choice: the item's difficulty reaches the output as is).
    output_reads: str = "encoded"
    output_layers: int = 1  # hidden layers of the output MLP (AKT: 2)
    # One projection for queries and keys (AKT's kq_same): a question then attends most to
    # past questions like itself, before anything is learned.
    shared_query_key: bool = False
    temperature: float = 1.0  # logits are divided by it (fitted on valid after training)


class MonotonicAttentionBlock(nn.Module):
    """Multi-head attention with distance decay, then residual, norm, feed-forward, norm."""

    def __init__(self, config: AKTConfig, *, empty_slot: bool) -> None:
        super().__init__()
        d = config.d_model
        self.num_heads = config.num_heads
        self.key = nn.Linear(d, d)
        self.query = self.key if config.shared_query_key else nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        # Softplus keeps each head's decay rate >= 0 (monotonic attention).
        self.decay = nn.Parameter(torch.full((config.num_heads,), -2.0))
        self.context_decay = config.decay == "context"
        # A key/value every query may attend to (the retriever's "no history yet").
        self.empty = nn.Parameter(torch.zeros(2, d)) if empty_slot else None
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_dim), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.ffn_dim, d),
        )  # fmt: skip
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        visible: torch.Tensor,
        distance: torch.Tensor,
    ) -> torch.Tensor:
        """queries [B, Tq, D]; keys, values [B, Tk, D]; visible [B, Tq, Tk] bool; distance
        [B, Tq, Tk] float. Returns [B, Tq, D]. A query must see at least one key (or the
        empty slot)."""
        b, tq, d = queries.shape
        k, v = self.key(keys), self.value(values)
        if self.empty is not None:
            k = torch.cat([self.empty[0].expand(b, 1, d), k], dim=1)
            v = torch.cat([self.empty[1].expand(b, 1, d), v], dim=1)
            visible = torch.cat([visible.new_ones(b, tq, 1), visible], dim=2)
            distance = torch.cat([distance.new_zeros(b, tq, 1), distance], dim=2)
        q = self._heads(self.query(queries))
        scores = q @ self._heads(k).transpose(-1, -2) / math.sqrt(d // self.num_heads)
        theta = F.softplus(self.decay).view(1, -1, 1, 1)
        hidden = ~visible.unsqueeze(1)
        if self.context_decay:
            scores = scores * torch.exp(-theta * _context_distance(scores, hidden, distance))
        else:
            scores = scores - theta * distance.unsqueeze(1)
        scores = scores.masked_fill(hidden, float("-inf"))
        attended = (torch.softmax(scores, dim=-1) @ self._heads(v)).transpose(1, 2)
        h = self.norm1(queries + self.dropout(self.out(attended.reshape(b, tq, d))))
        return self.norm2(h + self.dropout(self.ffn(h)))


@dataclass(frozen=True)
class EncodedHistory:
    """What the retriever reads of a history: encoded questions and answers, [B, T, D] each."""

    questions: torch.Tensor
    answers: torch.Tensor

    @property
    def rows(self) -> int:
        return self.questions.shape[1]


def _distance(t_query: int, t_key: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """[1, Tq, Tk] rows between query position ``offset + i`` and key position ``j`` (>= 0)."""
    q = torch.arange(t_query, device=device).view(1, -1, 1) + offset
    k = torch.arange(t_key, device=device).view(1, 1, -1)
    return (q - k).clamp(min=0).float()


def _context_distance(
    scores: torch.Tensor, hidden: torch.Tensor, distance: torch.Tensor
) -> torch.Tensor:
    """AKT's context-aware distance [B, H, Tq, Tk]: sqrt(rows apart x the attention weight on
    the visible keys after this one), computed without gradient as in AKT. Keys must be in
    time order."""
    with torch.no_grad():
        weights = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
        after = weights.flip(-1).cumsum(-1).flip(-1) - weights  # weight on later keys
        return (after * distance.unsqueeze(1)).clamp(min=0).sqrt()


def _attempt_geometry(context_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows [B, T]: which rows come before each row's attempt ([B, T, T] bool) and how far
    each row is from its attempt's start ([B, T, T] float, >= 0)."""
    t = context_index.shape[1]
    positions = torch.arange(t, device=context_index.device).view(1, 1, t)
    before_attempt = positions <= context_index.unsqueeze(-1)
    from_start = (context_index.unsqueeze(-1) + 1 - positions).clamp(min=0).float()
    return before_attempt, from_start


class AKT(nn.Module):
    def __init__(self, config: AKTConfig) -> None:
        super().__init__()
        if config.d_model % config.num_heads:
            raise ValueError("d_model must be a multiple of num_heads")
        self.config = config
        d, s = config.d_model, config.num_skills + 1
        self.skill = nn.Embedding(s, d)
        self.skill_variation = nn.Embedding(s, d)
        self.interaction = nn.Embedding(2 * s, d)
        self.interaction_variation = nn.Embedding(2 * s, d)
        # Item difficulty, index 0 (unknown item, padding) fixed at 0.
        self.difficulty = nn.Embedding(config.num_items + 1, 1, padding_idx=0)
        nn.init.zeros_(self.difficulty.weight)
        self.item_bias = nn.Embedding(config.num_items + 1, 1, padding_idx=0)
        nn.init.zeros_(self.item_bias.weight)
        self.question_encoder = MonotonicAttentionBlock(config, empty_slot=False)
        self.knowledge_encoder = MonotonicAttentionBlock(config, empty_slot=False)
        self.retriever = MonotonicAttentionBlock(config, empty_slot=True)
        layers: list[nn.Module] = []
        width = 2 * d
        for _ in range(config.output_layers):
            layers += [nn.Linear(width, config.ffn_dim), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.ffn_dim
        self.output = nn.Sequential(*layers, nn.Linear(width, 1))

    # ------------------------------------------------------------------------- embeddings
    def question_embedding(self, skills: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """x = c_skill + mu_item * d_skill: [...] -> [..., D]; unknown skills embed to 0."""
        mu = self.difficulty(items)
        x = self.skill(skills) + mu * self.skill_variation(skills)
        return x * (skills > 0).unsqueeze(-1).to(x.dtype)

    def interaction_embedding(
        self, skills: torch.Tensor, items: torch.Tensor, correct: torch.Tensor
    ) -> torch.Tensor:
        """y = e_(skill, r) + mu_item * f_(skill, r): [...] -> [..., D]."""
        tokens = skills * 2 + correct
        y = self.interaction(tokens) + self.difficulty(items) * self.interaction_variation(tokens)
        return y * (skills > 0).unsqueeze(-1).to(y.dtype)

    # ----------------------------------------------------------------------------- blocks
    def encode_history(
        self,
        skills: torch.Tensor,
        items: torch.Tensor,
        correct: torch.Tensor,
        context_index: torch.Tensor,
        known: EncodedHistory | None = None,
    ) -> EncodedHistory:
        """The encoded questions and answers of the rows [B, T], reusing ``known``'s encoding of
        the first rows (a learner's state extended by new answers: only they are encoded).

        A row's question is read at the start of its attempt: it sees the questions of earlier
        attempts and itself (not its sibling rows), at distances from the attempt's start, so
        that a row reads the same whether it is predicted in a sequence or as the next attempt
        after its history. A row's answer is encoded causally (rows up to it). Neither
        changes when rows are appended later, which is what makes ``known`` reusable.
        """
        first = 0 if known is None else known.rows
        if first > skills.shape[1]:
            raise ValueError(f"known covers {first} rows, more than the {skills.shape[1]} given")
        new = self._encode(skills, items, correct, *_attempt_geometry(context_index), first=first)
        if known is None:
            return new
        return EncodedHistory(
            torch.cat([known.questions, new.questions], dim=1),
            torch.cat([known.answers, new.answers], dim=1),
        )

    def _encode(
        self,
        skills: torch.Tensor,
        items: torch.Tensor,
        correct: torch.Tensor,
        before_attempt: torch.Tensor,
        from_start: torch.Tensor,
        first: int = 0,
    ) -> EncodedHistory:
        """Rows ``first:`` encoded, attending to all rows as keys."""
        b, t = skills.shape
        rows = torch.arange(t, device=skills.device)
        itself = (rows[first:].view(-1, 1) == rows.view(1, -1)).unsqueeze(0)  # [1, T', T]
        causal = (rows[first:].view(-1, 1) >= rows.view(1, -1)).unsqueeze(0).expand(b, -1, -1)
        x = self.question_embedding(skills, items)
        y = self.interaction_embedding(skills, items, correct)
        questions = self.question_encoder(
            x[:, first:], x, x, before_attempt[:, first:] | itself, from_start[:, first:]
        )
        rows_apart = _distance(t - first, t, skills.device, offset=first).expand(b, -1, -1)
        answers = self.knowledge_encoder(y[:, first:], y, y, causal, rows_apart)
        return EncodedHistory(questions, answers)

    def encode_next_questions(
        self, history_x: torch.Tensor, skills: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Encoded questions of candidate next rows [1, N, D], each read after the history
        ``history_x`` [1, T, D] and itself (not after the other candidates)."""
        t, n = history_x.shape[1], skills.shape[1]
        x = self.question_embedding(skills, items)
        keys = torch.cat([history_x, x], dim=1)  # [1, T + N, D]
        visible = torch.cat(
            [
                torch.ones(1, n, t, dtype=torch.bool, device=x.device),
                torch.eye(n, dtype=torch.bool, device=x.device).unsqueeze(0),
            ],
            dim=2,
        )
        # Every candidate stands at position t, right after the history.
        distance = torch.cat(
            [_distance(1, t, x.device, offset=t).expand(1, n, t), x.new_zeros(1, n, n)], dim=2
        )
        return self.question_encoder(x, keys, keys, visible, distance)

    def next_attempt_logits(
        self,
        skills: torch.Tensor,
        items: torch.Tensor,
        encoded: EncodedHistory,
        target_skills: torch.Tensor,
        target_items: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [1, N] of candidate rows (``target_*`` [1, N]) as the attempt after the
        history (``skills``, ``items`` [1, T], encoded as ``encoded``)."""
        t, n = skills.shape[1], target_skills.shape[1]
        history_x = self.question_embedding(skills, items)
        questions = self.encode_next_questions(history_x, target_skills, target_items)
        visible = torch.ones(1, n, t, dtype=torch.bool, device=skills.device)
        distance = _distance(1, t, skills.device, offset=t).expand(1, n, t)
        knowledge = self.retriever(questions, encoded.questions, encoded.answers, visible, distance)
        return self.logits_for(knowledge, questions, target_skills, target_items)

    def logits_for(
        self,
        knowledge: torch.Tensor,
        questions: torch.Tensor,
        skills: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        """[..., D] knowledge and encoded questions of rows ``skills``, ``items`` [...] ->
        [...] logit of correct."""
        if self.config.output_reads == "embedding":
            questions = self.question_embedding(skills, items)
        logit = self.output(torch.cat([knowledge, questions], dim=-1)).squeeze(-1)
        if self.config.item_bias:
            logit = logit - self.item_bias(items).squeeze(-1)
        return logit / self.config.temperature

    # ---------------------------------------------------------------------------- training
    def forward(
        self,
        skills: torch.Tensor,
        correct: torch.Tensor,
        context_index: torch.Tensor,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each row's logit from the rows its context allows (the DKT interface, plus items).

        skills, correct, items: [B, T] long; context_index: [B, T] long, -1 = no history.
        Returns (logits [B, T], mean BCE over masked rows + Rasch L2, or None).
        """
        if items is None:
            items = torch.zeros_like(skills)
        before_attempt, from_start = _attempt_geometry(context_index)
        encoded = self._encode(skills, items, correct, before_attempt, from_start)
        knowledge = self.retriever(
            encoded.questions, encoded.questions, encoded.answers, before_attempt, from_start
        )
        logits = self.logits_for(knowledge, encoded.questions, skills, items)
        if targets is None:
            return logits, None
        penalty = self.difficulty.weight.pow(2).sum()
        if self.config.item_bias:
            penalty = penalty + self.item_bias.weight.pow(2).sum()
        # As in AKT, whose loss is summed over rows: the penalty per batch row is l2 / rows.
        rows = (skills > 0).sum() if mask is None else (mask & (skills > 0)).sum()
        loss = masked_bce(logits, targets, mask, skills)
        return logits, loss + self.config.rasch_l2 * penalty / rows.clamp(min=1)
