"""Researchers' path: the emotion training pipeline submitted with `ray job submit`.

A local Ray with its job server stands in for a cluster; the job gets the repository as its
working directory (uploaded, as it would be to a remote cluster) and the data location through
``TUTOR_DATA_DIR``. A smoke-sized run: a few rows, one epoch, nothing registered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from pipelines.common import REPO_ROOT, shared_data_dir
from tests.support.serve_process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.data]
GOEMOTIONS = shared_data_dir() / "goemotions"
# A token file left in ~/.ray by another cluster would turn authentication on for this one.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    if not (GOEMOTIONS / "original").is_dir():
        pytest.skip(f"GoEmotions data not found at {GOEMOTIONS} (set TUTOR_DATA_DIR)")
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in NO_AUTH.items():
            env.setenv(key, value)
        ray.init(
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            ray.shutdown()


def test_train_emotion_runs_as_a_submitted_job(job_server, tmp_path):
    runtime_env = f'{{"env_vars": {{"TUTOR_DATA_DIR": "{GOEMOTIONS.parent.resolve()}"}}}}'
    # The job's shell may not have this venv on its PATH: name the interpreter.
    entrypoint = [
        sys.executable, "-m", "pipelines.emotion.train", "--limit-train", "32",
        "--limit-eval", "32", "--epochs", "1", "--threads", "1", "--no-register",
        "--storage", str(tmp_path / "results"),
    ]  # fmt: skip
    submit = [
        str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", job_server,
        "--working-dir", str(REPO_ROOT), "--runtime-env-json", runtime_env, "--",
    ]  # fmt: skip
    # Right after start-up the job server may have no agent yet ("try again later"): retry that.
    deadline = time.monotonic() + 120
    while True:
        completed = subprocess.run(
            [*submit, *entrypoint],
            cwd=REPO_ROOT,
            env={**os.environ, **NO_AUTH},
            capture_output=True,
            text=True,
            timeout=600,
        )
        agent_missing = "No available agent" in completed.stdout + completed.stderr
        if not agent_missing or time.monotonic() > deadline:
            break
        time.sleep(3)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "succeeded" in output
    # The pipeline ran to its end inside the job: trained, evaluated, checked its artifact.
    assert "test macro-F1" in output
    assert "merged artifact vs training logits" in output
    assert "--no-register: not registering" in output
