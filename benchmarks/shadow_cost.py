"""What a shadow costs the learner: `/v1/tutor` at 1 client with no shadow, then with a shadow
version on every model that has another registered version (emotion, difficulty,
personalization), each in an app of its own started the same way, in one run.

The shadow scores each turn after the answer is sent (deployments/lifecycle/), so the figure
to watch is p50 at 1 client: it should not move. The count of stored shadow outputs shows the
shadow did run.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.load import closed_loop
from models.common.registry import ModelRegistry
from store.sqlite_store import SQLiteStore
from tests.support.serve_process import free_port, serve_running, write_config

MODELS = {"Emotion": "emotion", "Difficulty": "difficulty", "Personalization": "personalization"}


def shadow_versions(config: dict) -> dict[str, str]:
    """Per deployment, the newest registered version that is not its champion."""
    app = config["applications"][0]
    registry = ModelRegistry(app["args"].get("registry_dir") or ModelRegistry().root)
    chosen = {}
    for deployment in app["deployments"]:
        model = MODELS.get(deployment["name"])
        if model is None:
            continue
        versions = registry.versions(model)
        champion = deployment.get("user_config", {}).get("model_version", "latest")
        champion = versions[-1] if champion == "latest" and versions else champion
        others = [v for v in versions if v != champion]
        if others:
            chosen[deployment["name"]] = others[-1]
    return chosen


def _run(config_path: Path, overrides: dict, seconds: float, request: Callable) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = Path(tmp) / f"bench-shadow-{uuid.uuid4().hex}.db"
        bench_config = write_config(
            Path(tmp) / "serve_config.yaml",
            port=port,
            base=config_path,
            store_uri=f"sqlite:///{db}",
            deployment_overrides=overrides,
        )
        with serve_running(bench_config, port=port, log_path=Path(tmp) / "serve.log") as url:
            closed_loop(url, 2, 3, request)  # warm-up
            timing = closed_loop(url, 1, seconds, request)
        store = SQLiteStore(db)
        timing["shadow_outputs"] = {
            model: sum(1 for _ in store.iter_shadow_outputs(model)) for model in MODELS.values()
        }
        store.close()
        return timing


def bench_shadow_cost(config_path: Path, seconds: float, request: Callable) -> dict:
    config = yaml.safe_load(config_path.read_text())
    shadows = shadow_versions(config)
    overrides = {name: {"shadow": {"version": version}} for name, version in shadows.items()}
    without = _run(config_path, {}, seconds, request)
    with_shadow = _run(config_path, overrides, seconds, request)
    return {
        "shadows": shadows,
        "no_shadow_1_client": without,
        "shadow_1_client": with_shadow,
        "p50_ratio": round(with_shadow["p50_ms"] / without["p50_ms"], 3),
        "p99_ratio": round(with_shadow["p99_ms"] / without["p99_ms"], 3),
    }


def shadow_cost_rows(cost: dict) -> list[tuple[str, str, str]]:
    rows = []
    for key, label in (("no_shadow_1_client", "no shadow"), ("shadow_1_client", "shadows")):
        r = cost[key]
        stored = sum(r["shadow_outputs"].values())
        rows.append(
            (
                f"/v1/tutor, 1 client, {label}",
                f"p50 {r['p50_ms']} ms / p99 {r['p99_ms']} ms",
                f"{stored} shadow outputs stored" if stored else "",
            )
        )
    shadows = ", ".join(f"{d} {v}" for d, v in cost["shadows"].items())
    rows.append(("shadow cost, 1 client", f"p50 x{cost['p50_ratio']}", f"shadows: {shadows}"))
    return rows
