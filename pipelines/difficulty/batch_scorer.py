"""The difficulty batch-scoring job's callable class: what each Ray Data actor imports, so it
imports torch and the model and nothing of the report (sklearn, matplotlib, yaml: ~2.5 s of
imports per actor on this machine, when an actor's whole start was the job's largest cost).

``trace_batched`` is ``KnowledgeTracer.trace`` for many learners at once (same numbers; a test
compares them): each learner's rows are cut into the windows ``trace`` would read, and the
windows of all learners are padded at the end (the networks are causal) and run together.
``trace_many`` is that for any registered version: the feature model (``LRTracer``) has no
network pass to batch, so it traces each learner in turn (one pass of counts per learner).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from models.common.registry import ModelRegistry
from models.difficulty.data import StudentSequence, attempt_context_index
from models.difficulty.dkt import encode_batch
from models.difficulty.loader import load_tracer
from models.difficulty.lr_tracer import LRTracer
from models.difficulty.tracer import KnowledgeTracer, window_start
from models.difficulty.tracer_api import Interaction

MODEL_NAME = "difficulty"


def trace_windows(item_ids: Sequence[str], max_history: int) -> list[tuple[int, int, int]]:
    """``(start, first, end)`` per pass of ``KnowledgeTracer.trace``: rows ``first..end-1`` are
    predicted by one causal pass over rows ``start..end-1``."""
    context = attempt_context_index(list(item_ids))
    starts = [window_start(c + 1, max_history) for c in context]
    passes, t = [], 0
    while t < len(item_ids):
        end = t
        while end < len(item_ids) and starts[end] == starts[t]:
            end += 1
        passes.append((starts[t], t, end))
        t = end
    return passes


@torch.inference_mode()
def trace_batched(
    tracer: KnowledgeTracer, sequences: Sequence[StudentSequence], *, batch_size: int = 64
) -> list[np.ndarray]:
    """Per sequence, each row's leak-free P(correct) (as ``tracer.trace`` gives it)."""
    chunks: list[tuple[int, int, StudentSequence]] = []  # (sequence, first row, window)
    for index, seq in enumerate(sequences):
        for start, first, end in trace_windows(seq.item_ids, tracer.max_history):
            chunks.append((index, first - start, seq.window(start, end)))
    out = [np.zeros(len(seq)) for seq in sequences]
    filled = [0] * len(sequences)
    # Passes come in row order per sequence; sorting by length keeps padding small, so record
    # each chunk's destination instead of relying on order.
    offsets = []
    for index, skip, window in chunks:
        offsets.append(filled[index])
        filled[index] += len(window) - skip
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i][2]))
    model = tracer.model
    for lo in range(0, len(order), batch_size):
        picked = order[lo : lo + batch_size]
        batch = encode_batch([chunks[i][2] for i in picked], tracer.vocab).to(tracer.device)
        logits, _ = model(batch.skills, batch.correct, batch.context_index, items=batch.items)
        probs = torch.sigmoid(logits).double().cpu().numpy()  # [B, T]
        for row, i in enumerate(picked):
            index, skip, window = chunks[i]
            kept = probs[row, skip : len(window)]
            out[index][offsets[i] : offsets[i] + len(kept)] = kept
    # Skills the model does not know get their prior, as in serving.
    for seq, probs in zip(sequences, out, strict=True):
        for t, skill in enumerate(seq.skill_ids):
            if not tracer.vocab.has_skill(skill):
                probs[t] = tracer.priors.for_skill(skill)
    return out


def trace_many(
    tracer: KnowledgeTracer | LRTracer,
    sequences: Sequence[StudentSequence],
    *,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Per sequence, each row's leak-free P(correct) as ``tracer.trace`` gives it, for either
    kind of tracer (the networks batched across learners)."""
    if isinstance(tracer, KnowledgeTracer):
        return trace_batched(tracer, sequences, batch_size=batch_size)
    return [
        np.array(
            [
                p.p_correct
                for p in tracer.trace(
                    [
                        Interaction(i, s, bool(c))
                        for i, s, c in zip(seq.item_ids, seq.skill_ids, seq.correct, strict=True)
                    ]
                )
            ],
            dtype=np.float64,
        )
        for seq in sequences
    ]


class DifficultyScorer:
    """The callable class Ray Data runs: loads each version it needs once per actor."""

    def __init__(
        self,
        *,
        registry_dir: str,
        version: str,
        champion: str,
        threads: int = 1,
        model_batch_size: int = 64,
    ) -> None:
        torch.set_num_threads(max(1, threads))
        self.registry = ModelRegistry(registry_dir)
        self.version = self.registry.resolve_version(MODEL_NAME, version)
        self.champion = self.registry.resolve_version(MODEL_NAME, champion)
        self.known = set(self.registry.versions(MODEL_NAME))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model_batch_size = model_batch_size
        self._tracers: dict[str, KnowledgeTracer | LRTracer] = {}
        for v in {self.version, self.champion}:
            self.tracer(v)

    def tracer(self, version: str) -> KnowledgeTracer | LRTracer:
        if version not in self._tracers:
            path = self.registry.load(MODEL_NAME, version).path
            # No cache: trace recomputes every window anyway.
            self._tracers[version] = load_tracer(path, device=self.device, encoding_cache_size=0)
        return self._tracers[version]

    def __call__(self, block: pd.DataFrame) -> pd.DataFrame:
        return self.score(block)

    def score(self, block: pd.DataFrame) -> pd.DataFrame:
        """Rows of whole learners (answers and turns, ``kind``) -> one row per answer."""
        answers = served_versions(block, known=self.known, champion=self.champion)
        if answers.empty:
            return empty_output()
        learners = [g for _, g in answers.groupby("learner_id", sort=False)]
        sequences = [
            StudentSequence(
                student=str(g["learner_id"].iat[0]),
                item_ids=g["item_id"].astype(str).tolist(),
                skill_ids=g["skill_id"].astype(str).tolist(),
                correct=g["correct"].astype(int).tolist(),
            )
            for g in learners
        ]
        candidate = trace_many(
            self.tracer(self.version), sequences, batch_size=self.model_batch_size
        )
        served = [np.full(len(seq), np.nan) for seq in sequences]
        for v in sorted(set(answers["served_version"])):
            wanted = [i for i, g in enumerate(learners) if (g["served_version"] == v).any()]
            probs = trace_many(
                self.tracer(v), [sequences[i] for i in wanted], batch_size=self.model_batch_size
            )
            for i, p in zip(wanted, probs, strict=True):
                mask = (learners[i]["served_version"] == v).to_numpy()
                served[i][mask] = p[mask]
        out = pd.concat(learners, ignore_index=True)
        out["position"] = np.concatenate([np.arange(len(seq)) for seq in sequences])
        out["version"] = self.version
        out["p_correct"] = np.concatenate(candidate)
        out["served_p_correct"] = np.concatenate(served)
        return out[OUTPUT_COLUMNS]


OUTPUT_COLUMNS = [
    "source_id", "learner_id", "turn_id", "ts", "item_id", "skill_id", "correct", "position",
    "version", "p_correct", "served_version", "served_version_from", "served_p_correct",
]  # fmt: skip


def empty_output() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})


def served_versions(block: pd.DataFrame, *, known: set[str], champion: str) -> pd.DataFrame:
    """The block's answers in (learner, ts) order, each with the version that served its turn
    (``served_version_from`` "turn"), else the champion ("champion": no turn, or a turn whose
    difficulty stage fell back, or a version the registry lacks)."""
    kind = block["kind"]
    answers = block[kind == "answer"].copy()
    turns = block[(kind == "turn") & block["version_difficulty"].isin(known)]
    by_turn = dict(zip(turns["turn_id"], turns["version_difficulty"], strict=True))
    from_turn = answers["turn_id"].map(by_turn)
    answers["served_version"] = from_turn.fillna(champion)
    answers["served_version_from"] = np.where(from_turn.notna(), "turn", "champion")
    # Export answers are per learner ordered by ts; source_id breaks ties deterministically.
    return answers.sort_values(["learner_id", "ts", "source_id"], kind="stable")
