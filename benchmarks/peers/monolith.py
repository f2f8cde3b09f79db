"""The tutor as a single-process FastAPI app (``benchmarks/peers/monolith_app.py``), served by
uvicorn with one worker in a process of its own, as a user would run it instead of Serve.

``monolith_running()`` yields its base URL once /healthz answers, and stops it (SIGINT to its
own process, then its own session) when the block ends. It has a temporary SQLite store.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.serve_process import REPO_ROOT, _stop, _wait_healthy, free_port


@contextlib.contextmanager
def monolith_running(
    port: int | None = None,
    *,
    emotion_backend: str = "torch",
    config: Path = REPO_ROOT / "serve_config.yaml",
    timeout_s: float = 180.0,
) -> Iterator[str]:
    """``emotion_backend``: torch or onnx (passed to ``EmotionClassifier.from_artifact``)."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="tutor-monolith-") as tmp:
        log_path = Path(tmp) / "monolith.log"
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": pythonpath,
        }
        command = [sys.executable, "-m", "benchmarks.peers.monolith_app", "--port", str(port)]
        command += ["--store-uri", f"sqlite:///{tmp}/tutor.db", "--config", str(config)]
        command += ["--emotion-backend", emotion_backend]
        with log_path.open("w") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                _wait_healthy(f"http://127.0.0.1:{port}", process, log_path, timeout_s)
                yield f"http://127.0.0.1:{port}"
            finally:
                _stop(process)
