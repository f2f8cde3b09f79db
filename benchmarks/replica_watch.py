"""Replicas per deployment of a running application, as Serve's status reports them.

``python -m benchmarks.replica_watch --address http://127.0.0.1:8265`` prints one JSON line a
second: ``{"t": ..., "running": {deployment: n}, "target": {deployment: n}}``. Tests run it as a
process of their own: reading Serve's status turns Ray's token auth on in the reading process
(deployments/cli/serve_client.py), which must not leak into pytest's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deployments.cli.serve_client import connect

REPO_ROOT = Path(__file__).resolve().parents[1]


def replica_counts(details: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``running``: replicas in state RUNNING; ``target``: what the autoscaler asks for; per
    deployment of every application (the tutor's and emotion's names do not overlap)."""
    deployments = {
        name: deployment
        for app in (details.get("applications") or {}).values()
        for name, deployment in ((app or {}).get("deployments") or {}).items()
    }
    running, target = {}, {}
    for name, deployment in deployments.items():
        replicas = deployment.get("replicas") or []
        running[name] = sum(r.get("state") == "RUNNING" for r in replicas)
        target[name] = int(deployment.get("target_num_replicas") or 0)
    return {"running": running, "target": target}


class ReplicaWatcher:
    """Reads Serve's status through the dashboard (one HTTP call a reading)."""

    def __init__(self, address: str) -> None:
        self._client = connect(address)

    def read(self) -> dict[str, dict[str, int]]:
        return replica_counts(self._client.get_serve_details())


class ServeWatch:
    """This module's ``main`` in a process of its own (reading Serve's status turns Ray's token
    auth on in the reading process, which must not be the caller's); the latest reading."""

    def __init__(self, dashboard: str, interval_s: float = 0.5) -> None:
        command = [sys.executable, "-m", "benchmarks.replica_watch", "--address", dashboard]
        command += ["--interval", str(interval_s)]
        self._process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.latest: dict = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                self.latest = json.loads(line)

    def running(self, deployment: str) -> int:
        return (self.latest.get("running") or {}).get(deployment, -1)

    def wait_for(self, condition, timeout_s: float) -> float | None:
        """Seconds until ``condition(self)`` held, or None when it did not within the bound."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if condition(self):
                return round(time.monotonic() - started, 1)
            time.sleep(0.25)
        return None

    def stop(self) -> None:
        self._process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)


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
