"""Small helpers every pipeline shares: logging set-up and the code version to register."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """The git commit the pipeline runs from, marked ``-dirty`` when the tree has changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


class DirtyTreeError(RuntimeError):
    """The working tree has uncommitted changes, so no commit names the code that would run."""


def committed_code_version(*, allow_dirty: bool = False) -> str:
    """The commit to register a model under; refuses a tree with uncommitted changes.

    Called before training starts, so that a long run is not wasted on an artifact whose code no
    commit holds. ``allow_dirty`` (the pipelines' ``--allow-dirty``, for experiments) records
    ``<sha>-dirty`` instead.
    """
    version = code_version()
    if version.endswith("-dirty") and not allow_dirty:
        raise DirtyTreeError(
            f"the working tree has uncommitted changes on top of {version[: -len('-dirty')]}: "
            "commit them before registering a model (or pass --allow-dirty, or --no-register)"
        )
    return version


def add_registration_flags(parser: argparse.ArgumentParser) -> None:
    """``--no-register`` and ``--allow-dirty``, the same on every pipeline that registers."""
    parser.add_argument(
        "--no-register",
        "--dry-run",
        action="store_true",
        help="train or fit and report, but register nothing",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="register from a working tree with uncommitted changes, as <sha>-dirty "
        "(experiments only: no commit holds that code)",
    )


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def shared_data_dir() -> Path:
    """The public datasets: ``$TUTOR_DATA_DIR``, else ``../shared/data`` beside the repo."""
    return Path(os.environ.get("TUTOR_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def use_offline_models(torch_threads: int) -> None:
    """Never reach for a model hub (weights come from packages) and bound torch's threads."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(max(1, torch_threads))


def init_ray(threads: int, env: dict[str, str] | None = None) -> None:
    """Join the job's cluster under ``ray job submit``; else start a private local Ray.

    The local Ray never attaches to someone else's cluster on this machine and is bounded to
    ``threads + 1`` CPUs (one worker plus Ray Train's coordinator).
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        ray.init()  # the job's cluster and runtime env
        return
    ray.init(
        address="local",
        num_cpus=threads + 1,
        include_dashboard=False,
        runtime_env={"env_vars": {**(env or {}), "PYTHONPATH": str(REPO_ROOT)}},
    )
