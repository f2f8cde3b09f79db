"""The tutor turn's floor, served: ``tutor_floor_running()`` yields the base URL of a no-op Serve
graph of the tutor's shape (``benchmarks/peers/tutor_floor_app.py``), run the way `make serve`
runs the real app: ``serve run`` in a process of its own, with HAProxy and Serve's
throughput-optimised data plane (``tests.support.serve_process``), from a config derived from
``serve_config.yaml`` (same deployments, placement, replica counts and request limits).

What a turn costs beyond this floor is the models, the store and the project's own code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from deployments.config import TUTOR_APP, config_deployments, config_placement
from tests.support.serve_process import (
    DEFAULT_CONFIG,
    REPO_ROOT,
    TEST_INGRESS_DRAIN,
    free_port,
    serve_running,
)

FLOOR_IMPORT_PATH = "benchmarks.peers.tutor_floor_app:build_app"
FLOOR_DEPLOYMENTS = ("Ingress", "Emotion", "Difficulty", "Personalization", "LLMRouter")
FLOOR_TITLE = "Tutor floor"  # the floor app's OpenAPI title: how it is told from another app


def own_fallback_proxy() -> dict[str, str]:
    """Free ports for Serve's fallback proxy. Behind HAProxy, Serve also runs its Python proxy
    on a fixed port (8500 HTTP, 9500 gRPC) as HAProxy's backup server, used while no ingress
    replica is up: with another Ray's Serve on this machine holding 8500, this app's HAProxy
    sends its requests to the other app (seen here: /healthz and /v1/tutor answered by a test's
    tutor app while the floor was starting)."""
    return {
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
    }


def floor_config(base: dict, *, port: int) -> dict:
    """``base`` (a parsed ``serve_config.yaml``) turned into the floor's: its graph instead of
    the tutor's, the same placement and deployment options, no ``user_config`` (the floor's
    deployments have nothing to configure) and no store or registry."""
    config = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    config["http_options"]["port"] = port
    placement = config_placement(config)
    entries = config_deployments(config)
    # The tutor's application; the emotion application's Emotion joins it.
    app = next(a for a in config["applications"] if a["name"] == TUTOR_APP)
    config["applications"] = [app]
    args = app.get("args") or {}
    app["name"] = "tutor_floor"
    app["route_prefix"] = "/"
    app["import_path"] = FLOOR_IMPORT_PATH
    app["args"] = {
        "accelerator": args.get("accelerator", "auto"),
        "placement": {name: placement[name] for name in FLOOR_DEPLOYMENTS if name in placement},
    }
    deployments = [entries[name] for name in FLOOR_DEPLOYMENTS if name in entries]
    for deployment in deployments:
        deployment.pop("user_config", None)
    app["deployments"] = deployments
    return config


@contextlib.contextmanager
def tutor_floor_running(
    port: int | None = None, *, base_config: Path = DEFAULT_CONFIG, timeout_s: float = 180.0
) -> Iterator[str]:
    """Serve the floor until the block ends; yields its base URL once /healthz answers.
    Stopped as ``serve_running`` stops the real app (SIGINT to its own process)."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="tutor-floor-") as tmp:
        config = Path(tmp) / "floor_config.yaml"
        base = yaml.safe_load(base_config.read_text())
        config.write_text(yaml.safe_dump(floor_config(base, port=port), sort_keys=False))
        # Replicas import the floor's graph from this checkout, whatever is installed.
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        # No load balancer in front to deregister a stopping ingress: the short drain of the
        # tests' apps, so that stopping takes seconds, not Serve's 30 s.
        env = {"PYTHONPATH": pythonpath, **own_fallback_proxy(), **TEST_INGRESS_DRAIN}
        with serve_running(
            config, port=port, log_path=Path(tmp) / "serve.log", env=env, timeout_s=timeout_s
        ) as base_url:
            _check_is_floor(base_url)
            yield base_url


def _check_is_floor(base_url: str) -> None:
    title = httpx.get(f"{base_url}/openapi.json", timeout=10).json()["info"]["title"]
    if title != FLOOR_TITLE:
        raise RuntimeError(f"{base_url} serves {title!r}, not the floor: another app's port?")
