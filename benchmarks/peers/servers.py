"""Start a peer server in a process group of its own on a free loopback port; stop only it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from benchmarks.peers import venvs
from tests.support.serve_process import free_port


@contextlib.contextmanager
def process_running(
    command: list[str],
    *,
    port: int,
    health_path: str,
    log_path: Path,
    env: dict[str, str],
    timeout_s: float = 180.0,
) -> Iterator[str]:
    """Run ``command`` until the block ends; yields the base URL once ``health_path`` is 200."""
    log = log_path.open("w")
    process = subprocess.Popen(
        command,
        cwd=venvs.REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited early:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + health_path, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"not up after {timeout_s}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        _stop(process)
        log.close()


def _stop(process: subprocess.Popen) -> None:
    # The group is the session we created: the server and the workers it forked, nothing else.
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers left after the leader exited


def naive_running(
    python: Path | str,
    artifact: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
):
    """The naive FastAPI server (fastapi_naive.py) under ``python``'s uvicorn."""
    port = free_port()
    command = [str(python), "-m", "uvicorn", "benchmarks.peers.fastapi_naive:app"]
    # uvicorn's defaults (access log on), as a user runs it.
    command += ["--host", "127.0.0.1", "--port", str(port)]
    full_env = venvs.peer_env({"PEER_ARTIFACT": str(artifact), **(env or {})})
    return process_running(
        command,
        port=port,
        health_path="/healthz",
        log_path=log_path,
        env=full_env,
        timeout_s=timeout_s,
    )


def bentoml_running(python: Path | str, artifact: Path, log_path: Path, env: dict | None = None):
    """The BentoML service (bentoml_service.py) under ``bentoml serve``."""
    port = free_port()
    bentoml_bin = Path(python).parent / "bentoml"
    command = [str(bentoml_bin), "serve", "benchmarks.peers.bentoml_service:EmotionService"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    home = venvs.REPO_ROOT / "var" / "peers" / "bentoml_home"
    full_env = venvs.peer_env(
        {"PEER_ARTIFACT": str(artifact), "BENTOML_HOME": str(home), **(env or {})}
    )
    return process_running(
        command, port=port, health_path="/readyz", log_path=log_path, env=full_env
    )


def peer_info(base_url: str, kind: str) -> dict:
    if kind == "bentoml":
        return httpx.post(base_url + "/peer-info", json={}, timeout=10).json()
    return httpx.get(base_url + "/healthz", timeout=10).json()
