"""A local Ray job server for the research jobs' tests: `ray job submit` against it, as a researcher
does against a cluster's head.

The server is a Ray head of its own, `ray start --head --block` in a subprocess (its dashboard holds
the job server), on loopback and on free ports (the dashboard agent's fixed default, 52365, is
taken whenever another Ray runs on the machine), with the repository as the jobs' working
directory and this virtual environment's Python first on PATH. It is ended by its process group:
only the processes this module started, never another Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from tests.support.serve_process import REPO_ROOT, free_port

READY = "job server ready"
# Ray 2.60 turns token authentication on for every cluster it starts: the server and the
# `ray job submit` that talks to it share a token of this process's own.
AUTH_TOKEN = secrets.token_hex(32)


def _environment(temp_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        # Loopback only (README "Ports and what listens").
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        # A job's `python` is this environment's, as in a shell where .venv is activated.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        RAY_TMPDIR=str(temp_dir),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=AUTH_TOKEN,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def local_job_server(
    temp_dir: Path, *, num_cpus: float = 2, timeout_s: float = 120
) -> Iterator[str]:
    """Start a job server; yield its address (``http://127.0.0.1:<port>``) until the block ends.
    ``temp_dir`` must be short (Ray puts unix sockets in it)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    dashboard_port = free_port()
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        f"--num-cpus={num_cpus}",
        f"--port={free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--include-dashboard=true",
    ]  # fmt: skip
    log = (temp_dir / "job_server.log").open("w")
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=_environment(temp_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not dashboard_up(address):
            if process.poll() is not None:
                raise RuntimeError(f"the job server exited: see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no job server within {timeout_s}s: see {log.name}")
            time.sleep(0.5)
        yield address
    finally:
        _stop(process)
        log.close()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the head's process group; SIGKILL what is left after 5 s (`ray start --block`
    does not always take its children down on a signal)."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                process.wait(timeout=5)
                return
            process.poll()  # reap the head so its group can empty
            time.sleep(0.5)
    process.wait(timeout=5)


def submit(
    address: str,
    entrypoint: Sequence[str],
    *,
    env_vars: dict[str, str] | None = None,
    upload_repo: bool = True,
    timeout_s: float = 600,
) -> tuple[bool, str]:
    """``ray job submit --address <address> [--working-dir <repo>] -- <entrypoint>``: the CLI a
    researcher uses, waiting for the job's end. Returns whether it succeeded, and its output.

    ``upload_repo`` sends the repository as the job's working directory, as to a remote cluster
    (paths a job writes must then be absolute); ``env_vars`` go in its runtime environment.
    The job server may have no agent yet right after it starts ("try again later"): retried."""
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address]
    if upload_repo:
        command += ["--working-dir", str(REPO_ROOT)]
    if env_vars:
        command += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    # The job's shell may not have this venv's interpreter as `python`: name it.
    entrypoint = [sys.executable if part == "python" else part for part in entrypoint]
    deadline = time.monotonic() + 120
    while True:
        completed = subprocess.run(
            [*command, "--", *entrypoint],
            cwd=REPO_ROOT,
            env=_environment(Path(tempfile.gettempdir())),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        output = completed.stdout + completed.stderr
        if "No available agent" not in output or time.monotonic() > deadline:
            return completed.returncode == 0 and "succeeded" in output, output
        time.sleep(3)


def dashboard_up(address: str) -> bool:
    headers = {"authorization": f"Bearer {AUTH_TOKEN}"}
    try:
        return httpx.get(f"{address}/api/version", headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
