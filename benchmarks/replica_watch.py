"""Replicas per deployment of a running application, as Serve's status reports them.

``python -m benchmarks.replica_watch --address http://127.0.0.1:8265`` prints one JSON line a
second: ``{"t": ..., "running": {deployment: n}, "target": {deployment: n}}``. Tests run it as a
process of their own: reading Serve's status turns Ray's token auth on in the reading process
(deployments/cli/serve_client.py), which must not leak into pytest's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from deployments.cli.serve_client import connect

APP = "tutor"


def replica_counts(details: dict[str, Any], app: str = APP) -> dict[str, dict[str, int]]:
    """``running``: replicas in state RUNNING; ``target``: what the autoscaler asks for."""
    deployments = ((details.get("applications") or {}).get(app) or {}).get("deployments") or {}
    running, target = {}, {}
    for name, deployment in deployments.items():
        replicas = deployment.get("replicas") or []
        running[name] = sum(r.get("state") == "RUNNING" for r in replicas)
        target[name] = int(deployment.get("target_num_replicas") or 0)
    return {"running": running, "target": target}


class ReplicaWatcher:
    """Reads Serve's status through the dashboard (one HTTP call a reading)."""

    def __init__(self, address: str, app: str = APP) -> None:
        self._client = connect(address)
        self._app = app

    def read(self) -> dict[str, dict[str, int]]:
        return replica_counts(self._client.get_serve_details(), self._app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="The Ray dashboard's address.")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    watcher = ReplicaWatcher(args.address)
    while True:
        try:
            reading = watcher.read()
        except Exception as exc:  # the app restarting: say so and keep watching
            reading = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps({"t": time.time(), **reading}), flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
