"""Fine-tune the emotion model (MiniLM + LoRA + linear head) on GoEmotions as a Ray Train job,
then calibrate it on dev and register it as the next ``emotion`` version.

    python -m pipelines.emotion.train --data ../shared/data/goemotions
    ray job submit --working-dir . -- python -m pipelines.emotion.train --data /abs/goemotions

The defaults are the served recipe: the hyperparameters emotion v2 (and v3, v4, which share its
encoder and label head) was trained with, as its ``metadata.json`` records them (``RECIPE``).

This module is the driver and its command line. The training loop runs in one Ray Train worker
(``TorchTrainer``, ``num_workers=1``; a GPU when there is one or with ``--gpu``):
``pipelines.emotion.train_worker``. The driver then calibrates, measures and registers the best
epoch: ``pipelines.emotion.train_finish``.

Registering needs a committed tree: the commit is taken before training starts
(``pipelines.common.committed_code_version``), so a dirty tree fails at once, not after the
run; ``--allow-dirty`` registers under ``<sha>-dirty`` instead, ``--no-register`` registers
nothing.

Resume: ``--resume-from <checkpoint dir>`` continues from an epoch checkpoint (``state.pt``);
``--finish-from <checkpoint dir>`` only redoes calibration, metrics and registration from a
final checkpoint (``adapter.pt``, ``head.pt``, ``*_logits.npy``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import torch

from models.common.registry import DEFAULT_REGISTRY_ROOT
from pipelines.common import (
    REPO_ROOT,
    add_registration_flags,
    committed_code_version,
    init_ray,
    setup_logging,
    use_offline_models,
)
from pipelines.emotion.goemotions import DEFAULT_DATA, check_labels_file
from pipelines.emotion.train_finish import finish
from pipelines.emotion.train_worker import train_loop_per_worker

logger = logging.getLogger("train_emotion")

DEFAULT_STORAGE = REPO_ROOT / "var" / "ray_results"
# The served recipe (models/artifacts/emotion/v2/metadata.json, "config"): the CLI's defaults.
RECIPE = {
    "epochs": 4,
    "seed": 0,
    "lr": 1e-3,
    "head_lr": 2e-3,
    "weight_decay": 0.01,
    "warmup": 0.06,
    "batch_size": 32,
    "max_length": 64,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "head_dropout": 0.1,
    "threads": 2,
}


def run_training(args: argparse.Namespace, loop_config: dict) -> Path:
    """Run the worker loop under Ray Train; return a local copy of its final checkpoint."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(args.threads),
    }
    init_ray(args.threads, env)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=1,
            use_gpu=loop_config["use_gpu"],
            resources_per_worker={"CPU": args.threads},
        ),
        run_config=RunConfig(
            name=args.run_name,
            storage_path=str(args.storage.resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    final_dir = args.storage.resolve() / args.run_name / "final"
    if final_dir.exists():
        shutil.rmtree(final_dir)
    result.checkpoint.to_directory(str(final_dir))
    logger.info("final checkpoint: %s", final_dir)
    return final_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GoEmotions folder")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    p.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="Ray Train results")
    p.add_argument("--run-name", default=None, help="default: emotion-<timestamp>")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    p.add_argument("--seed", type=int, default=RECIPE["seed"])
    p.add_argument("--lr", type=float, default=RECIPE["lr"], help="LoRA learning rate")
    p.add_argument("--head-lr", type=float, default=RECIPE["head_lr"])
    p.add_argument("--weight-decay", type=float, default=RECIPE["weight_decay"])
    p.add_argument(
        "--warmup", type=float, default=RECIPE["warmup"], help="share of steps for warm-up"
    )
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    p.add_argument("--max-length", type=int, default=RECIPE["max_length"])
    p.add_argument("--lora-r", type=int, default=RECIPE["lora_r"])
    p.add_argument("--lora-alpha", type=int, default=RECIPE["lora_alpha"])
    p.add_argument("--lora-dropout", type=float, default=RECIPE["lora_dropout"])
    p.add_argument("--head-dropout", type=float, default=RECIPE["head_dropout"])
    p.add_argument(
        "--threads", type=int, default=RECIPE["threads"], help="torch threads / worker CPUs"
    )
    p.add_argument("--gpu", action="store_true", help="train on a GPU (default: if available)")
    p.add_argument("--limit-train", type=int, default=0, help="first N train rows (smoke runs)")
    p.add_argument("--limit-eval", type=int, default=0, help="first N dev/test rows")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--resume-from", type=Path, default=None, help="epoch checkpoint dir")
    p.add_argument("--finish-from", type=Path, default=None, help="final checkpoint dir")
    p.add_argument("--version", default=None, help="e.g. v2; default: the next free version")
    add_registration_flags(p)
    return p.parse_args(argv)


def loop_config_from(args: argparse.Namespace) -> dict:
    """The worker loop's configuration (``train_worker.train_loop_per_worker``)."""
    return {
        "data": str(args.data),
        **{key: getattr(args, key) for key in RECIPE},
        "use_gpu": bool(args.gpu or torch.cuda.is_available()),
        "limit_train": args.limit_train,
        "limit_eval": args.limit_eval,
        "log_every": args.log_every,
        "resume_from": str(args.resume_from.resolve()) if args.resume_from else None,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    # Before any training: a run that could not be registered fails now, not in half an hour.
    code_version = (
        None if args.no_register else committed_code_version(allow_dirty=args.allow_dirty)
    )
    use_offline_models(args.threads)
    args.data = args.data.resolve()
    if not (args.data / "original").is_dir():
        raise SystemExit(f"no GoEmotions data at {args.data} (expected original/*.tsv)")
    check_labels_file(args.data)
    args.run_name = args.run_name or time.strftime("emotion-%Y%m%d-%H%M%S")
    loop_config = loop_config_from(args)
    train_config = {
        k: v for k, v in loop_config.items() if k not in ("data", "resume_from", "log_every")
    }
    train_config.update(
        optimizer="adamw, linear warm-up then linear decay", trainer="ray.train.torch.TorchTrainer"
    )
    started = time.perf_counter()
    final_dir = args.finish_from.resolve() if args.finish_from else run_training(args, loop_config)
    out = finish(
        final_dir,
        data=args.data,
        train_config={**train_config, "run_name": args.run_name},
        limit_eval=args.limit_eval,
        registry=args.registry,
        version=args.version,
        code_version=code_version,
    )
    logger.info("done in %.1f min", (time.perf_counter() - started) / 60)
    return out


if __name__ == "__main__":
    main()
