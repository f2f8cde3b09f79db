"""`make lifecycle-replay`: held-out ASSISTments learners replayed through the running tutor
while candidates are live, and what `tutor models status` then reports about them.

The app is started as `make serve` starts it (on free ports, a store of its own). Through the
`tutor` command: difficulty v1 (DKT) as a 50% canary of the champion v2, personalization v2 as a
50% canary of v1, and emotion v3 as a shadow of v4. Then learners of the assist2009_pid test
split (fold 1: never seen by the difficulty models) take their real exercises in their real
order, one per turn, each turn carrying the answer to the previous turn's exercise, so every
answer is a label for the version that predicted it. The status of each model, with the live
comparison of its versions, goes to benchmarks/results/lifecycle_replay.json and a summary to
the console.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from models.difficulty.data import StudentSequence, load_split
from pipelines.common import shared_data_dir
from tests.support.serve_process import (
    REPO_ROOT,
    dashboard_address,
    free_port,
    run_tutor,
    serve_running,
    write_config,
)

CHANGES = [
    ("canary", "difficulty", "v1", "--percent", "50"),
    ("canary", "personalization", "v2", "--percent", "50"),
    ("shadow", "emotion", "v3"),
]
MESSAGES_FILE = REPO_ROOT / "tests/data/learner_messages_test.jsonl"


def attempts(sequence: StudentSequence) -> list[dict]:
    """One exercise per attempt (a multi-skill problem is several rows: taken once)."""
    rows, previous = [], None
    for item, skill, correct in zip(
        sequence.item_ids, sequence.skill_ids, sequence.correct, strict=True
    ):
        if item != previous:
            rows.append({"item_id": item, "skill_id": skill, "correct": bool(correct)})
        previous = item
    return rows


async def replay(base_url: str, learners: list[list[dict]], messages: list[str], clients: int):
    queue: asyncio.Queue = asyncio.Queue()
    for index, exercises in enumerate(learners):
        queue.put_nowait((f"replay-{index}", exercises))
    outcomes = {"turns": 0, "failed": 0, "degraded": 0}

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            learner, exercises = queue.get_nowait()
            for k in range(len(exercises)):
                body = {
                    "learner_id": learner,
                    "message": messages[(k + len(learner)) % len(messages)],
                    "candidates": [
                        {"item_id": e["item_id"], "skill_id": e["skill_id"]}
                        for e in exercises[k : k + 3]
                    ],
                }
                if k > 0:
                    body["answer"] = exercises[k - 1]
                response = await http.post("/v1/tutor", json=body)
                outcomes["turns"] += 1
                outcomes["failed"] += response.status_code != 200
                outcomes["degraded"] += bool(response.json().get("degraded"))

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return outcomes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="default: the shared data")
    parser.add_argument("--learners", type=int, default=80)
    parser.add_argument("--steps", type=int, default=40, help="exercises per learner, at most")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/lifecycle_replay.json")
    )
    args = parser.parse_args(argv)

    data_dir = args.data or shared_data_dir() / "kt"
    sequences = [s for s in load_split(data_dir, "assist2009_pid", "test", 1) if len(s) >= 10]
    learners = [attempts(s)[: args.steps] for s in sequences[: args.learners]]
    messages = [json.loads(line)["text"] for line in MESSAGES_FILE.read_text().splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = write_config(
            Path(tmp) / "serve_config.yaml",
            port=port,
            store_uri=f"sqlite:///{tmp}/replay-{uuid.uuid4().hex}.db",
        )
        log = Path(tmp) / "serve.log"
        with serve_running(config, port=port, log_path=log) as url:
            address = dashboard_address(log)
            for change in CHANGES:
                run_tutor(config, address, *change)
            started = time.perf_counter()
            outcomes = asyncio.run(replay(url, learners, messages, args.clients))
            outcomes["seconds"] = round(time.perf_counter() - started, 1)
            time.sleep(12)  # the replicas' last serving stats reach the store (every 10 s)
            status = json.loads(run_tutor(config, address, "status", "--json"))
            table = run_tutor(config, address, "status")
    result = {
        "changes": [" ".join(c) for c in CHANGES],
        "learners": len(learners),
        "exercises": sum(len(x) for x in learners),
        "replay": outcomes,
        "status": status,
    }
    print(table)
    print(json.dumps(outcomes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
