"""Batch scoring of a difficulty version over logged answers (the per-model half of
``pipelines.batch_score``).

Each logged answer gets P(correct) from the learner's answers strictly before it in the export
(in ``ts`` order), read exactly as serving reads them (``KnowledgeTracer.trace``: the same
attempt grouping and the same sliding context window), once by the candidate version and once
by the version that served the answer's turn, so both are compared on the same rows.

Grouping. A prediction needs the learner's whole earlier history, and the export is
partitioned by day, so a learner's answers lie in many files. The job sorts the answers (with
their turns' served versions, unioned in as rows of their own) by ``learner_id`` and maps whole
blocks (``batch_size=None``): a sort range-partitions by key, so a learner's rows are never
split across blocks (the same mechanism as ``groupby().map_groups`` under the sort shuffle).
Unlike ``map_groups``, which calls the model once per learner, a block's learners go through
the network together, padded into batches. ``check_whole_learners`` verifies the result: a
learner split across blocks would show two rows at position 0.

``trace_batched`` is ``KnowledgeTracer.trace`` for many learners at once (same numbers; a test
compares them): each learner's rows are cut into the windows ``trace`` would read, and the
windows of all learners are padded at the end (the networks are causal) and run together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from models.common.calibration import reliability
from models.common.registry import ModelRegistry
from models.difficulty.data import StudentSequence, attempt_context_index
from models.difficulty.dkt import encode_batch
from models.difficulty.tracer import KnowledgeTracer, window_start
from pipelines.batch_score import Check
from pipelines.difficulty.evaluate import binary_metrics

MODEL_NAME = "difficulty"
# What the job reads: the answers, and the served version of the turns they belong to.
ANSWER_COLUMNS = ["learner_id", "source_id", "turn_id", "item_id", "skill_id", "correct", "ts"]
TURN_COLUMNS = ["turn_id", "learner_id", "ts", "version_difficulty"]
# Answers and turns as rows of one dataset, so that one sort by learner brings them together.
ROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()), ("learner_id", pa.string()), ("ts", pa.float64()),
        ("turn_id", pa.string()), ("source_id", pa.string()), ("item_id", pa.string()),
        ("skill_id", pa.string()), ("correct", pa.bool_()), ("version_difficulty", pa.string()),
    ]
)  # fmt: skip


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
        self._tracers: dict[str, KnowledgeTracer] = {}
        for v in {self.version, self.champion}:
            self.tracer(v)

    def tracer(self, version: str) -> KnowledgeTracer:
        if version not in self._tracers:
            path = self.registry.load(MODEL_NAME, version).path
            # No encoding cache: trace recomputes every window anyway.
            self._tracers[version] = KnowledgeTracer.from_artifact(
                path, device=self.device, encoding_cache_size=0
            )
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
        candidate = trace_batched(
            self.tracer(self.version), sequences, batch_size=self.model_batch_size
        )
        served = [np.full(len(seq), np.nan) for seq in sequences]
        for v in sorted(set(answers["served_version"])):
            wanted = [i for i, g in enumerate(learners) if (g["served_version"] == v).any()]
            probs = trace_batched(
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


def validate(scored: pd.DataFrame, input_rows: int) -> None:
    check_whole_learners(scored)
    if len(scored) != input_rows or not scored["source_id"].is_unique:
        raise RuntimeError(f"{len(scored)} scored rows for {input_rows} answers, or one twice")


def check_whole_learners(scored: pd.DataFrame) -> None:
    """Raise if a learner's answers were scored in more than one piece (each piece would start
    its history again at position 0) or any answer is missing."""
    starts = scored.loc[scored["position"] == 0, "learner_id"].value_counts()
    if (starts > 1).any():
        raise RuntimeError(f"learners split across blocks: {list(starts[starts > 1].index[:5])}")


def compare(scored: pd.DataFrame) -> dict[str, Any]:
    """Candidate vs served on the same rows: AUC, log-loss, accuracy, ECE (10 bins)."""
    labels = scored["correct"].astype(int).to_numpy()
    out: dict[str, Any] = {}
    for name, column in (("candidate", "p_correct"), ("served", "served_p_correct")):
        probs = scored[column].astype(float).to_numpy()
        out[name] = {**binary_metrics(labels, probs), "ece": reliability(probs, labels)["ece"]}
    out["delta"] = {
        k: out["candidate"][k] - out["served"][k] for k in ("auc", "log_loss", "acc", "ece")
    }
    out["mean_abs_p_diff"] = float(
        np.mean(np.abs(scored["p_correct"].astype(float) - scored["served_p_correct"]))
    )
    out["by_served_version"] = {
        str(v): {
            "answers": len(rows),
            "candidate_auc": binary_metrics(
                rows["correct"].astype(int).to_numpy(), rows["p_correct"].to_numpy(float)
            )["auc"],
            "served_auc": binary_metrics(
                rows["correct"].astype(int).to_numpy(), rows["served_p_correct"].to_numpy(float)
            )["auc"],
        }
        for v, rows in scored.groupby("served_version")
    }
    out["served_versions"] = scored["served_version"].value_counts().to_dict()
    out["served_version_from"] = scored["served_version_from"].value_counts().to_dict()
    out["learners"] = int(scored["learner_id"].nunique())
    return out


def as_rows(table: pa.Table, kind: str) -> pa.Table:
    """An answers or turns table in ``ROW_SCHEMA`` (what the other kind has is null)."""
    columns = {
        field.name: table[field.name].cast(field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in ROW_SCHEMA
    }
    columns["kind"] = pa.array([kind] * len(table), pa.string())
    return pa.table(columns, schema=ROW_SCHEMA)


# -- the job's parts (pipelines.batch_score) ---------------------------------------------------
Scorer = DifficultyScorer


def batch_size(requested: int) -> None:
    """Always whole blocks: a batch boundary inside a learner would cut their history
    (``requested`` is ignored; the network's own batch is ``model_batch_size``)."""
    return None


def scorer_kwargs(registry_dir: str, version: str, champion: str) -> dict[str, Any]:
    return {"registry_dir": registry_dir, "version": version, "champion": champion}


def dataset(export: Path, *, blocks: int):
    """Answers and their turns' served versions, sorted by learner into ``blocks`` blocks."""
    import ray.data

    # The sort cannot estimate a union's blocks and falls back to this setting (200): as many
    # tiny blocks, each a few learners, i.e. a few rows per network batch (measured: 8x slower
    # scoring). A dataset takes the context as it is when created: set it before reading.
    ray.data.DataContext.get_current().default_hash_shuffle_parallelism = blocks

    def rows(kind: str, table: str, columns: list[str]):
        ds = ray.data.read_parquet(str(export / table), override_num_blocks=blocks)
        ds = ds.select_columns(columns)
        return ds.map_batches(as_rows, fn_args=(kind,), batch_format="pyarrow", batch_size=None)

    answers = rows("answer", "answers", ANSWER_COLUMNS)
    turns = rows("turn", "turns", TURN_COLUMNS)
    return answers.union(turns).sort("learner_id")


def raw_input(export: Path) -> pd.DataFrame:
    tables = [
        as_rows(pads.dataset(export / name, format="parquet", partitioning="hive").to_table(
            columns=columns), kind)
        for kind, name, columns in (("answer", "answers", ANSWER_COLUMNS),
                                    ("turn", "turns", TURN_COLUMNS))
    ]  # fmt: skip
    return pa.concat_tables(tables).to_pandas()


def input_rows(export: Path) -> int:
    return pads.dataset(export / "answers", format="parquet", partitioning="hive").count_rows()


def raw_score(scorer: DifficultyScorer, frame: pd.DataFrame, size: None) -> None:
    scorer(frame)


@dataclass(frozen=True)
class Thresholds:
    """The gate. Measured on the synthetic export (60,915 held-out ASSISTments answers, served
    80% by v2 and 20% by a v1 canary; README_part.md): candidate v1 vs served: AUC -0.0078,
    log-loss +0.0059, ECE 0.021 (v2 replaced v1 for its 0.010 better test AUC: the gate must
    fail it); candidate v2 vs served passes. The paired AUC difference's standard error is
    ~0.002 at 60k answers and ~3x that at 5000, hence the 5000 floor for a 0.005 margin. The
    shipped versions' test ECEs are 0.014 (v2) and 0.021 (v1): 0.05 catches a lost calibration
    (the tutor picks exercises by P(correct) in a band), well above the ECE's noise at 5000."""

    min_answers: float = 5000
    max_auc_drop: float = 0.005
    max_log_loss_rise: float = 0.005
    max_ece: float = 0.05


def checks(comparison: dict[str, Any], t: Thresholds, *, rows: int) -> list[Check]:
    cand, served = comparison["candidate"], comparison["served"]
    return [
        Check("answers", rows, ">=", t.min_answers,
              "paired AUC difference's s.e. ~0.005 at 5000 answers"),
        Check("auc", cand["auc"], ">=", served["auc"] - t.max_auc_drop,
              "served AUC - 0.005; v1 vs v2-served: -0.0078"),
        Check("log_loss", cand["log_loss"], "<=", served["log_loss"] + t.max_log_loss_rise,
              "served log-loss + 0.005; v1 vs v2-served: +0.0059"),
        Check("ece", cand["ece"], "<=", t.max_ece,
              "shipped: 0.014 (v2), 0.021 (v1); P(correct) picks exercises in a band"),
    ]  # fmt: skip


def markdown(comparison: dict[str, Any]) -> list[str]:
    lines = [
        f"Learners: {comparison['learners']}; served versions {comparison['served_versions']} "
        f"(told by: {comparison['served_version_from']}); mean |p candidate - p served| "
        f"{comparison['mean_abs_p_diff']:.4f}.",
        "",
        "| on the same answers | AUC | log-loss | accuracy | ECE |",
        "|---|---|---|---|---|",
    ]
    for name in ("candidate", "served", "delta"):
        m = comparison[name]
        lines.append(
            f"| {name} | {m['auc']:.4f} | {m['log_loss']:.4f} | {m['acc']:.4f} | {m['ece']:.4f} |"
        )
    lines += ["", "| served by | answers | candidate AUC | served AUC |", "|---|---|---|---|"]
    for version, m in comparison["by_served_version"].items():
        lines.append(
            f"| {version} | {m['answers']} | {m['candidate_auc']:.4f} | {m['served_auc']:.4f} |"
        )
    return lines
