"""A small store shaped like the one the tutor writes, for the research jobs' tests.

Turns carry real learner-like messages (tests/data), the served emotion and difficulty results
as the API answers them, the bandit's context and rewards that feed its statistics, so that
``make export`` over it gives every job (off-policy, batch scoring, at-risk) rows it can use.

    python -m tests.support.research_data --store sqlite:////tmp/research/tutor.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.common.vocab import LEARNING_STATES, STRATEGIES
from models.personalization.context import CONTEXT_DIM
from store import AnswerRecord, FeedbackRecord, RewardRecord, TurnRecord, TutorStore, open_store

DATA = Path(__file__).resolve().parents[1] / "data" / "learner_messages_dev.jsonl"
START = 1_760_000_000.0  # 2025-10-09 08:53 UTC
POLICY = "lin_ts_v1"


def _emotion(state: str, rng: np.random.Generator) -> dict:
    weights = rng.dirichlet(np.ones(len(LEARNING_STATES)))
    weights[LEARNING_STATES.index(state)] += 1.0
    states = dict(zip(LEARNING_STATES, (weights / weights.sum()).round(4).tolist(), strict=True))
    return {
        "state": state,
        "confidence": states[state],
        "states": states,
        "goemotions": {"scores": {"confusion": 0.4, "annoyance": 0.2}, "predicted": []},
    }


def _difficulty(skill: str, item: str, p: float) -> dict:
    prediction = {"item_id": item, "skill_id": skill, "p_correct": p, "basis": "model"}
    return {
        "predictions": [prediction],
        "recommended": prediction,
        "target_band": [0.7, 0.85],
        "history_length": 3,
        "trace": None,
        "model_version": "v1",
    }


def fill(store: TutorStore, *, learners: int = 4, turns: int = 8, seed: int = 0) -> int:
    """`turns` turns per learner, 5 hours apart (so over a few UTC days), each with an answer
    carried by the next turn, a reward per answer and an explicit feedback on every third;
    the number of turns stored."""
    rng = np.random.default_rng(seed)
    messages = [json.loads(line) for line in DATA.read_text().splitlines()]
    count = 0
    for learner in range(learners):
        learner_id = f"learner-{learner}"
        for k in range(turns):
            turn_id, ts = f"{learner_id}-t{k}", START + 18_000.0 * k + 60.0 * learner
            message = messages[(learner * turns + k) % len(messages)]
            context = [1.0, *rng.uniform(0, 1, CONTEXT_DIM - 1).round(4).tolist()]
            strategy = STRATEGIES[int(rng.integers(len(STRATEGIES)))]
            skill, item = f"skill-{k % 3}", f"item-{k}"
            store.save_turn(
                TurnRecord(
                    turn_id=turn_id, learner_id=learner_id, session_id=f"{learner_id}-s{k // 4}",
                    ts=ts, request_id=f"req-{turn_id}", message=message["text"],
                    reply="Let's look at it together.", emotion=_emotion(message["state"], rng),
                    difficulty=_difficulty(skill, item, float(rng.uniform(0.3, 0.9))),
                    strategy=strategy, propensity=1.0 / len(STRATEGIES), context=context,
                    provider="offline", model="offline",
                    model_versions={"emotion": "v1", "difficulty": "v1", "personalization": POLICY},
                    timings_ms={"emotion": 12.5, "total": 40.0},
                )
            )  # fmt: skip
            correct = bool(rng.uniform() < 0.6)
            store.add_answer(
                AnswerRecord(learner_id=learner_id, source_id=f"{turn_id}:answer", item_id=item,
                             skill_id=skill, correct=correct, ts=ts + 30.0)
            )  # fmt: skip
            reward = RewardRecord(turn_id=turn_id, learner_id=learner_id, source="answer",
                                  policy=POLICY, strategy=strategy, reward=float(correct),
                                  ts=ts + 30.0)  # fmt: skip
            store.add_reward(reward, context=context)
            if k % 3 == 0:
                store.add_feedback(
                    FeedbackRecord(turn_id=turn_id, learner_id=learner_id, reward=0.75, ts=ts + 45)
                )
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--learners", type=int, default=4)
    parser.add_argument("--turns", type=int, default=8, help="per learner")
    args = parser.parse_args(argv)
    with open_store(args.store) as store:
        print(fill(store, learners=args.learners, turns=args.turns), "turns stored")


if __name__ == "__main__":
    main()
