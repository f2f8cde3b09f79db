"""A synthetic export with real text and real answer sequences, for batch scoring without a
served store (its tests and the README's throughput figures).

    python -m pipelines.synthetic_export --out var/synthetic_export [--data ../shared/data]
        [--learners 200] [--max-answers 0] [--copies 1] [--canary-percent 20]
        [--fallback-percent 1]

Learners are held-out ASSISTments 2009 students (``kt/assist2009_pid`` test fold 1; the shipped
difficulty versions trained on fold 1's train split); ``--copies N`` repeats each under N ids
(fold 1's 830 test students give 60,915 answers; copies make a bigger export for throughput
from the same held-out answers). Each answer comes with one turn; the turn's message is a
labelled learner message from ``tests/data`` or a GoEmotions test sentence (in turn,
shuffled). What the served versions said is filled in by running them: the champions of
``serve_config.yaml``, and for ``--canary-percent`` of learners (by a hash of the learner id,
as the served canary splits) the previous version of each model. ``--fallback-percent`` of
turns log the emotion stage's fallback (version ``unavailable``) as the tutor does.

Writes ``OUT/turns`` and ``OUT/answers`` in the export's layout (hive ``day=`` partitions of
``part-<n>.parquet``); the batch-scoring job reads nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.common.vocab import LEARNING_STATES, STRATEGIES
from models.difficulty.data import load_split
from models.difficulty.loader import load_tracer
from models.emotion.classifier import EmotionClassifier
from pipelines.batch_score import champion
from pipelines.common import REPO_ROOT, setup_logging, shared_data_dir, use_offline_models
from pipelines.difficulty.batch_scorer import trace_many

log = logging.getLogger("pipelines.synthetic_export")
START_TS = 1_790_000_000.0  # 2026-09-20 UTC
TURNS_SCHEMA = pa.schema(
    [
        ("turn_id", pa.string()), ("learner_id", pa.string()), ("session_id", pa.string()),
        ("ts", pa.float64()), ("request_id", pa.string()), ("message", pa.string()),
        ("reply", pa.string()), ("emotion_state", pa.string()),
        ("emotion_confidence", pa.float64()), ("emotion_json", pa.string()),
        ("difficulty_json", pa.string()), ("strategy", pa.string()),
        ("propensity", pa.float64()), ("context", pa.list_(pa.float64())),
        ("provider", pa.string()), ("model", pa.string()), ("version_emotion", pa.string()),
        ("version_difficulty", pa.string()), ("version_personalization", pa.string()),
        ("version_llm_router", pa.string()), ("model_versions_json", pa.string()),
        ("timings_ms_json", pa.string()), ("degraded", pa.list_(pa.string())),
    ]
)  # fmt: skip
ANSWERS_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()), ("source_id", pa.string()), ("turn_id", pa.string()),
        ("item_id", pa.string()), ("skill_id", pa.string()), ("correct", pa.bool_()),
        ("ts", pa.float64()),
    ]
)  # fmt: skip


def in_canary(learner_id: str, percent: float) -> bool:
    bucket = int(hashlib.sha256(learner_id.encode()).hexdigest()[:8], 16) % 10_000
    return bucket < percent * 100


def text_pool(data_dir: Path, seed: int) -> list[str]:
    """Labelled learner messages first, then GoEmotions test sentences, each part shuffled."""
    learner = [
        json.loads(line)["text"]
        for name in ("train", "dev", "test")
        for line in (REPO_ROOT / "tests" / "data" / f"learner_messages_{name}.jsonl")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    goemotions = [
        line.split("\t")[0]
        for line in (data_dir / "goemotions" / "original" / "test.tsv").read_text().splitlines()
        if line.strip()
    ]
    rng = random.Random(seed)
    rng.shuffle(learner)
    rng.shuffle(goemotions)
    return learner + goemotions


def emotion_outputs(classifier: EmotionClassifier, texts: list[str]) -> dict[str, dict]:
    """The served EmotionResult (as the turn logs it) per distinct text."""
    distinct = sorted(set(texts))
    results = {}
    for lo in range(0, len(distinct), 256):
        chunk = distinct[lo : lo + 256]
        for text, p in zip(chunk, classifier.predict(chunk), strict=True):
            results[text] = {
                "state": p.state,
                "confidence": p.confidence,
                "states": p.states,
                "goemotions": {"scores": p.scores, "predicted": p.predicted},
            }
    return results


def previous(registry: ModelRegistry, model: str, version: str) -> str:
    versions = registry.versions(model)
    return versions[max(0, versions.index(version) - 1)]


def build(args: argparse.Namespace) -> dict[str, int]:
    registry = ModelRegistry(args.registry)
    champions = {m: champion(m, args.serve_config) for m in ("emotion", "difficulty")}
    canaries = {m: previous(registry, m, v) for m, v in champions.items()}
    students = load_split(args.data / "kt", "assist2009_pid", "test", 1)[: args.learners]
    if args.max_answers:
        students = [s.window(0, args.max_answers) for s in students]
    # Copies under new ids: a bigger export of the same held-out answers (throughput at scale).
    students += [
        replace(s, student=f"{s.student}-copy{k}") for k in range(1, args.copies) for s in students
    ]
    rng = random.Random(args.seed)
    pool = text_pool(args.data, args.seed)
    learners = [f"kt-{s.student}" for s in students]
    served = {
        lid: canaries if in_canary(lid, args.canary_percent) else champions for lid in learners
    }

    # Difficulty: the served version's leak-free prediction of each answer, from the answers before.
    traced: dict[str, np.ndarray] = {}
    for version in sorted({v["difficulty"] for v in served.values()}):
        tracer = load_tracer(registry.load("difficulty", version).path, encoding_cache_size=0)
        mine = [i for i, lid in enumerate(learners) if served[lid]["difficulty"] == version]
        for i, probs in zip(mine, trace_many(tracer, [students[i] for i in mine]), strict=True):
            traced[learners[i]] = probs

    turns: list[dict] = []
    answers: list[dict] = []
    for lid, seq in zip(learners, students, strict=True):
        ts = START_TS + rng.uniform(0, 5 * 86_400)
        for t in range(len(seq)):
            if t and t % 20 == 0:
                ts += 86_400 * rng.uniform(0.5, 2.0)  # a new session on a later day
            ts += rng.uniform(20, 90)
            turn_id = f"{lid}-t{t}"
            versions = served[lid]
            turns.append(
                {
                    "turn_id": turn_id, "learner_id": lid, "session_id": f"{lid}-s{t // 20}",
                    "ts": ts, "request_id": f"req-{turn_id}",
                    "message": pool[len(turns) % len(pool)],
                    "reply": "(synthetic)", "strategy": rng.choice(STRATEGIES),
                    "propensity": 1 / len(STRATEGIES), "context": [], "provider": "offline",
                    "model": "offline", "version_emotion": versions["emotion"],
                    "version_difficulty": versions["difficulty"], "version_personalization": "v1",
                    "version_llm_router": None, "timings_ms_json": "{}", "degraded": [],
                    "difficulty_json": json.dumps({
                        "predictions": [{"item_id": seq.item_ids[t], "skill_id": seq.skill_ids[t],
                                         "p_correct": float(traced[lid][t])}],
                        "history_length": t, "model_version": versions["difficulty"],
                    }),
                }
            )  # fmt: skip
            answers.append(
                {
                    "learner_id": lid, "source_id": f"{turn_id}:answer", "turn_id": turn_id,
                    "item_id": seq.item_ids[t], "skill_id": seq.skill_ids[t],
                    "correct": bool(seq.correct[t]), "ts": ts + 1.0,
                }
            )  # fmt: skip

    # Emotion: each version runs once over the distinct texts its learners sent.
    outputs: dict[str, dict[str, dict]] = {}
    for version in sorted({v["emotion"] for v in served.values()}):
        texts = [t["message"] for t in turns if t["version_emotion"] == version]
        classifier = EmotionClassifier.from_artifact(registry.load("emotion", version).path)
        outputs[version] = emotion_outputs(classifier, texts)
    uniform = 1 / len(LEARNING_STATES)
    for turn in turns:
        if rng.random() < args.fallback_percent / 100:
            turn["version_emotion"] = "unavailable"
            turn["degraded"] = ["emotion: TimeoutError"]
            result = {"state": "neutral", "confidence": uniform,
                      "states": dict.fromkeys(LEARNING_STATES, uniform),
                      "goemotions": {"scores": {}, "predicted": []}}  # fmt: skip
        else:
            result = outputs[turn["version_emotion"]][turn["message"]]
        turn["emotion_state"] = result["state"]
        turn["emotion_confidence"] = result["confidence"]
        turn["emotion_json"] = json.dumps(result)
        turn["model_versions_json"] = json.dumps(
            {"emotion": turn["version_emotion"], "difficulty": turn["version_difficulty"]}
        )
    write_table(args.out / "turns", turns, TURNS_SCHEMA)
    write_table(args.out / "answers", answers, ANSWERS_SCHEMA)
    return {"learners": len(learners), "turns": len(turns), "answers": len(answers)}


def write_table(directory: Path, rows: list[dict], schema: pa.Schema) -> None:
    """``directory/day=YYYY-MM-DD/part-<n>.parquet`` by the UTC day of each row's ts."""
    table = pa.Table.from_pylist(rows, schema=schema)
    days = pa.array(
        [datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") for ts in table["ts"].to_pylist()]
    )
    pads.write_dataset(
        table.append_column("day", days),
        directory,
        format="parquet",
        partitioning=pads.partitioning(pa.schema([("day", pa.string())]), flavor="hive"),
        basename_template="part-{i}.parquet",
        existing_data_behavior="delete_matching",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--learners", type=int, default=200)
    parser.add_argument("--max-answers", type=int, default=0, help="per learner; 0: all")
    parser.add_argument("--copies", type=int, default=1, help="each learner this many times")
    parser.add_argument("--canary-percent", type=float, default=20.0)
    parser.add_argument("--fallback-percent", type=float, default=1.0)
    parser.add_argument("--serve-config", type=Path, default=REPO_ROOT / "serve_config.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(argv)
    use_offline_models(args.threads)
    counts = build(args)
    log.info("wrote %s under %s", counts, args.out)


if __name__ == "__main__":
    main()
