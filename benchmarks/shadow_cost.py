"""What a shadow costs the learner: `/v1/tutor` at 1 client with and without a shadow version on
every model that has another registered version (emotion, difficulty, personalization), in ONE
app, alternating (off, on, off, on, ...) through the `tutor` command, so that drift of a shared
machine falls on both sides alike.

The shadow scores each turn after the answer is sent, in a low-priority thread of the replica
(deployments/lifecycle/replica.py), so the figure to watch is p50 at 1 client. The count of
stored shadow outputs shows the shadows did run.
"""

from __future__ import annotations

import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.load import closed_loop
from deployments.config import config_deployments
from models.common.registry import ModelRegistry
from store.sqlite_store import SQLiteStore
from tests.support.serve_process import (
    dashboard_address,
    free_port,
    run_tutor,
    serve_running,
    write_config,
)

MODELS = {"Emotion": "emotion", "Difficulty": "difficulty", "Personalization": "personalization"}
ROUNDS = 3


def shadow_versions(config: dict) -> dict[str, str]:
    """Per model, the newest registered version that is not its champion."""
    app = config["applications"][0]
    registry = ModelRegistry(app["args"].get("registry_dir") or ModelRegistry().root)
    chosen = {}
    for deployment in config_deployments(config).values():
        model = MODELS.get(deployment["name"])
        if model is None:
            continue
        versions = registry.versions(model)
        champion = deployment.get("user_config", {}).get("model_version", "latest")
        champion = versions[-1] if champion == "latest" and versions else champion
        others = [v for v in versions if v != champion]
        if others:
            chosen[model] = others[-1]
    return chosen


def _fresh_learners(request: Callable, phase: str) -> Callable:
    """The same requests from learners of this phase only: a learner's history grows with every
    turn (and the turn's work with it), so reusing learners would make later phases slower."""

    def make(client: int, i: int):
        method, path, body = request(client, i)
        return method, path, {**body, "learner_id": f"{phase}-{body['learner_id']}"}

    return make


def bench_shadow_cost(config_path: Path, seconds: float, request: Callable) -> dict:
    shadows = shadow_versions(yaml.safe_load(config_path.read_text()))
    phases: dict[str, list[dict]] = {"no_shadow": [], "shadow": []}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = Path(tmp) / f"bench-shadow-{uuid.uuid4().hex}.db"
        config = write_config(
            Path(tmp) / "serve_config.yaml",
            port=port,
            base=config_path,
            store_uri=f"sqlite:///{db}",
        )
        log = Path(tmp) / "serve.log"
        with serve_running(config, port=port, log_path=log) as url:
            address = dashboard_address(log)
            closed_loop(url, 2, 3, request)  # warm-up
            for r in range(ROUNDS):
                off = _fresh_learners(request, f"off{r}")
                phases["no_shadow"].append(closed_loop(url, 1, seconds / ROUNDS, off))
                for model, version in shadows.items():
                    run_tutor(config, address, "shadow", model, version)
                on = _fresh_learners(request, f"on{r}")
                phases["shadow"].append(closed_loop(url, 1, seconds / ROUNDS, on))
                for model in shadows:
                    run_tutor(config, address, "shadow", model, "--stop")
        store = SQLiteStore(db)
        stored = {m: sum(1 for _ in store.iter_shadow_outputs(m)) for m in MODELS.values()}
        store.close()

    def summary(runs: list[dict]) -> dict:
        return {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
            "requests": sum(r["n"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "phases": runs,
        }

    without, with_shadow = summary(phases["no_shadow"]), summary(phases["shadow"])
    return {
        "shadows": shadows,
        "rounds": ROUNDS,
        "no_shadow_1_client": without,
        "shadow_1_client": {**with_shadow, "shadow_outputs": stored},
        "p50_ratio": round(with_shadow["p50_ms"] / without["p50_ms"], 3),
        "p99_ratio": round(with_shadow["p99_ms"] / without["p99_ms"], 3),
    }


def shadow_cost_rows(cost: dict) -> list[tuple[str, str, str]]:
    rows = []
    for key, label in (("no_shadow_1_client", "no shadow"), ("shadow_1_client", "shadows")):
        r = cost[key]
        stored = sum(r.get("shadow_outputs", {}).values())
        rows.append(
            (
                f"/v1/tutor, 1 client, {label} (median of {cost['rounds']})",
                f"p50 {r['p50_ms']} ms / p99 {r['p99_ms']} ms",
                f"{stored} shadow outputs stored" if stored else "",
            )
        )
    shadows = ", ".join(f"{m} {v}" for m, v in cost["shadows"].items())
    rows.append(("shadow cost, 1 client", f"p50 x{cost['p50_ratio']}", f"shadows: {shadows}"))
    return rows


if __name__ == "__main__":  # the shadow part of `make bench` alone
    import argparse
    import json

    from benchmarks.run import _tutor_request
    from tests.support.serve_process import DEFAULT_CONFIG

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/shadow_cost.json"))
    args = parser.parse_args()
    cost = bench_shadow_cost(args.config, args.seconds, _tutor_request)
    print("\n".join(" | ".join(row) for row in shadow_cost_rows(cost)))
    args.out.write_text(json.dumps(cost, indent=2) + "\n")
    print(f"wrote {args.out}")
