"""Start the real application the way `make serve` does (`serve run <config>`), on a free port.

Used by the integration tests and the benchmark: one `serve run` process per test module,
stopped with SIGINT (Serve's own clean shutdown), so only processes we started are ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"

# How `make serve` runs Serve (the Makefile exports the same): HAProxy in front of the ingress
# replicas instead of Serve's Python proxy, and Serve's throughput-optimised data plane (gRPC
# between replicas). Measured by `make bench`: ~2x tutor turns/s at 16 clients. Request-path
# logs stay unbuffered so a turn's lines are on disk at once. The caller's environment wins.
SERVE_RUNTIME_ENV = {
    # Nothing listens beyond this machine (Makefile SERVE_ENV, deployments/loopback.py).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
    "RAY_SERVE_ENABLE_HA_PROXY": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1"),
    # HAProxy retries on the other Ingress replica a request whose replica closed without a
    # byte of answer (a killed replica); the Makefile's SERVE_ENV says why and the caveat.
    "RAY_SERVE_HAPROXY_RETRY_ON": os.environ.get(
        "RAY_SERVE_HAPROXY_RETRY_ON", "conn-failure empty-response"
    ),
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": os.environ.get(
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE", "1"
    ),
}
# Serve keeps a stopping ingress replica at least 30 s (direct ingress behind HAProxy), for a load
# balancer in front to deregister it. A test's app has none, and every module's final stop met
# it (~33 s of teardown each, ~3 min of make test); the replica still drains its requests in
# flight (graceful_shutdown_timeout_s). For tests' env; benchmarks and `make serve` keep 30 s.
TEST_INGRESS_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
# ... and `serve run`'s flag that makes deployments/loopback.py Ray's worker setup hook.
SERVE_RUN_HOOK = [
    "--runtime-env-json",
    json.dumps({"worker_process_setup_hook": "deployments.loopback.bind_serve_to_loopback"}),
]


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A free port, never one this process was given before. The socket is closed before the
    caller binds the port, so the kernel may hand the same one out again: seen when the fake
    cluster's dashboard and its agent got the same port and `ray start` refused to start."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def served_version(deployment: str, config: Path = DEFAULT_CONFIG) -> str:
    """The champion ``model_version`` a deployment of the app's config serves."""
    apps = yaml.safe_load(Path(config).read_text())["applications"]
    (found,) = [d for app in apps for d in app["deployments"] if d["name"] == deployment]
    return found["user_config"]["model_version"]


def write_config(
    target: Path,
    *,
    port: int,
    store_uri: str,
    base: Path = DEFAULT_CONFIG,
    deployment_overrides: dict[str, dict] | None = None,
) -> Path:
    """A copy of ``base`` on another port and store (every application's), with per-deployment
    user_config overrides."""
    config = yaml.safe_load(base.read_text())
    config["http_options"]["port"] = port
    for app in config["applications"]:
        app.setdefault("args", {})["store_uri"] = store_uri
        for deployment in app["deployments"]:
            override = (deployment_overrides or {}).get(deployment["name"])
            if override:
                deployment.setdefault("user_config", {}).update(override)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


@contextlib.contextmanager
def serve_running(
    config: Path,
    *,
    port: int,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
) -> Iterator[str]:
    """Run `serve run config` until the block ends; yields the base URL once /healthz is ok."""
    serve_bin = Path(sys.executable).parent / "serve"
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A Ray of its own: never join a cluster that happens to run on this machine.
        "RAY_ADDRESS": "local",
        **SERVE_RUNTIME_ENV,
        # HAProxy's stats and metrics ports are fixed by default: take free ones, so this runs
        # beside a `make serve` on the same machine.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        # ... and so is the Python proxy HAProxy falls back to while no ingress replica is up
        # (8500/9500): with another Serve holding them, this app's HAProxy sent its first
        # requests to that other app (a /healthz 200 from the wrong application).
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        **direct_ingress_ports(),
        **(env or {}),
    }
    log = log_path.open("w")
    process = subprocess.Popen(
        [str(serve_bin), "run", *SERVE_RUN_HOOK, str(config)],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, process, log_path, timeout_s)
        yield base_url
    finally:
        _stop(process)
        log.close()


def direct_ingress_ports(window: int = 50) -> dict[str, str]:
    """A port window of its own for this app's ingress replicas, at random in Serve's ranges.

    Behind HAProxy each ingress replica listens on a port from a fixed range (30000-31000 for
    HTTP, 40000-41000 for gRPC) that two Rays on one machine do not coordinate: when one app's
    replica gives its port up (a restart, a scale-down) and another app's replica takes it, the
    first app's HAProxy sends its requests to the other app until it updates. Seen here with
    two test runs side by side. One Ray per machine, as in production, never meets this.
    """
    offset = random.randrange(1000 // window) * window
    return {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(30000 + offset),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(30000 + offset + window),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(40000 + offset),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(40000 + offset + window),
    }


def dashboard_address(log_path: Path) -> str:
    """The dashboard of the Ray that `serve run` started (its log says where), for `tutor`."""
    found = re.search(r"dashboard at \S*?(\d+\.\d+\.\d+\.\d+:\d+)", log_path.read_text())
    return f"http://{found.group(1)}" if found else "http://127.0.0.1:8265"


def run_tutor(config: Path, address: str, *args: str) -> str:
    """`tutor models ARGS` against the app of ``config``, in a process of its own (as an
    operator runs it; the command turns Ray's token auth on for itself, which must not leak
    into the caller's process). Its output; a RuntimeError with it when it fails."""
    command = [sys.executable, "-m", "deployments.cli.main", "models", *args]
    command += ["--config", str(config), "--address", address]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"tutor models {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def _wait_healthy(base_url: str, process: subprocess.Popen, log_path: Path, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve run exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"not healthy after {timeout_s}s:\n{log_path.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT first (serve run shuts Serve and its local Ray down), then escalate, by our pid."""
    if process.poll() is None:
        _signal_until_exit(process)
    # A shutdown cut short (SIGTERM/SIGKILL) can leave children behind, e.g. HAProxy reparented
    # to init in a process group of its own: end what is left of the session we created.
    for pid in _session_members(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)


def _session_members(session_id: int) -> list[int]:
    """Processes of the session that ``serve run`` led (Linux /proc; elsewhere, none)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command: state ppid pgrp session ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session_id:
            members.append(int(stat.parent.name))
    return members


def _signal_until_exit(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGINT:
                process.send_signal(sig)  # serve run's own clean shutdown
            else:
                os.killpg(process.pid, sig)  # our session only: serve run and what it started
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
