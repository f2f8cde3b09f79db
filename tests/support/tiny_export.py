"""A few dozen rows in the export's layout (turns and answers only), written with pyarrow, for
tests of the jobs that read an export. Real item and skill ids of ASSISTments 2009 (in the
shipped difficulty vocabulary) and made-up served emotion outputs; no model runs here."""

from __future__ import annotations

import json
import random
from pathlib import Path

from models.common.vocab import LEARNING_STATES
from pipelines.synthetic_export import ANSWERS_SCHEMA, START_TS, TURNS_SCHEMA, write_table

ITEMS = [("7410", "37"), ("10076", "54"), ("10091", "54"), ("10100", "54"), ("10089", "54")]
MESSAGES = [
    "I don't get why the denominator changes here",
    "oh wait, I see it now!",
    "this is so frustrating, I keep getting it wrong",
    "can you show me another example?",
    "ok",
]


def distribution(state: str) -> dict[str, float]:
    rest = 0.3 / (len(LEARNING_STATES) - 1)
    return {s: 0.7 if s == state else rest for s in LEARNING_STATES}


def write_tiny_export(out: Path, *, learners: int = 4, answers: int = 8, seed: int = 0) -> Path:
    """``learners`` x ``answers`` turns, each with one answer, over several days; one turn in
    ten logs the emotion fallback, one answer in ten has no turn (its version must default)."""
    rng = random.Random(seed)
    turns, rows = [], []
    for learner in range(learners):
        lid = f"learner-{learner}"
        ts = START_TS + learner * 3600.0
        for t in range(answers):
            ts += 86_400.0 * (t % 3 == 0) + 60.0
            turn_id = f"{lid}-t{t}"
            state = LEARNING_STATES[rng.randrange(len(LEARNING_STATES))]
            fallback = rng.random() < 0.1
            result = {"state": state, "confidence": 0.7, "states": distribution(state)}
            turns.append(
                {
                    "turn_id": turn_id, "learner_id": lid, "session_id": lid, "ts": ts,
                    "request_id": f"r-{turn_id}", "message": MESSAGES[t % len(MESSAGES)],
                    "reply": "", "emotion_state": state, "emotion_confidence": 0.7,
                    "emotion_json": json.dumps(result), "difficulty_json": None,
                    "strategy": "hint", "propensity": 1 / 6, "context": [], "provider": "offline",
                    "model": "offline", "version_emotion": "unavailable" if fallback else "v4",
                    "version_difficulty": "v1" if learner % 2 else "v2",
                    "version_personalization": "v1", "version_llm_router": None,
                    "model_versions_json": "{}", "timings_ms_json": "{}", "degraded": [],
                }
            )  # fmt: skip
            item, skill = ITEMS[rng.randrange(len(ITEMS))]
            orphan = rng.random() < 0.1
            rows.append(
                {
                    "learner_id": lid, "source_id": f"{turn_id}:answer",
                    "turn_id": None if orphan else turn_id, "item_id": item, "skill_id": skill,
                    "correct": rng.random() < 0.6, "ts": ts + 1.0,
                }
            )  # fmt: skip
    write_table(out / "turns", turns, TURNS_SCHEMA)
    write_table(out / "answers", rows, ANSWERS_SCHEMA)
    return out
