"""Train a difficulty model (DKT, the attentive AKT or the LR tracer) on one fold and register it.

    python -m pipelines.difficulty.train [--model dkt|akt|lr] [--dataset assist2009_pid]
        [--fold 1] [--no-register | --allow-dirty]

``--model lr`` (the logistic-regression tracer, ``pipelines.difficulty.lr_fit``) fits in this
process: a scikit-learn fit of a minute or two needs no Ray Train worker, checkpoints or GPU.

A Ray Train job (``TorchTrainer``, one worker, a GPU when the cluster has one or ``--gpu``):
each epoch's train loss and valid AUC are reported, the final artifact is the run's checkpoint,
and the driver registers it. Runs locally (a private Ray) or under ``ray job submit``. This
module is the worker, the driver and the CLI; the training itself (plain PyTorch) is
``pipelines.difficulty.training.fit_and_test``.

Trains on ``train_k``, picks the epoch with the best leak-free AUC on ``valid_k``, and reports
on ``test_k`` the leak-free AUC/accuracy (the figure to quote), the per-row ("leaky") AUC early
papers reported, and a skill-prior baseline, all from ``pipelines.difficulty.evaluate``'s metric
code. Training uses the same leak-free gather as evaluation and serving. Sequences are cut into
windows of ``--window`` rows (also the served model's ``max_history``).

A registering run takes its code version before training and refuses a working tree with
uncommitted changes (``--allow-dirty`` registers it as ``<sha>-dirty``). The Ray Train run's
folder is recorded relative to ``--storage``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.difficulty.lr_tracer import ARCHITECTURE as LR_MODEL
from models.difficulty.tracer import KnowledgeTracer
from pipelines.common import (
    REPO_ROOT,
    add_registration_flags,
    committed_code_version,
    init_ray,
    setup_logging,
)
from pipelines.difficulty.evaluate import DEFAULT_DATA_DIR, DEFAULT_DATASET, MODEL_NAME
from pipelines.difficulty.lr_fit import (
    DEFAULT_BLOCK_WEIGHTS,
    DEFAULT_CS,
    fit_fold,
    parse_block_weight,
)
from pipelines.difficulty.training import ARCHITECTURES, fit_and_test

log = logging.getLogger("pipelines.difficulty.train")
DEFAULT_STORAGE = REPO_ROOT / "var" / "ray_results"
METRICS_FILE = "metrics.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the kt/ data dir")
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--model", choices=sorted([*ARCHITECTURES, LR_MODEL]), default="dkt")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--patience",
        type=int,
        default=5,
        help="stop after this many epochs without a better valid AUC",
    )
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=100)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="default: "
        + ", ".join(f"{name} {a.default_dropout}" for name, a in sorted(ARCHITECTURES.items())),
    )
    parser.add_argument("--d-model", type=int, default=64, help="AKT")
    parser.add_argument("--heads", type=int, default=4, help="AKT")
    parser.add_argument("--ffn-dim", type=int, default=128, help="AKT")
    parser.add_argument("--rasch-l2", type=float, default=1e-5, help="AKT")
    parser.add_argument("--item-bias", action="store_true", help="AKT: per-item output bias")
    parser.add_argument("--decay", choices=("rows", "context"), default="rows", help="AKT")
    parser.add_argument(
        "--output-reads", choices=("encoded", "embedding"), default="encoded", help="AKT"
    )
    parser.add_argument("--output-layers", type=int, default=1, help="AKT")
    parser.add_argument(
        "--shared-query-key", action="store_true", help="AKT: one projection for query and key"
    )
    parser.add_argument(
        "--train-protocol",
        choices=("attempt", "row"),
        default="attempt",
        help="row: train and pick the epoch leaky per row, as early papers did (to compare "
        "with their figures only; never served)",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="skip fitting the output temperature on valid",
    )
    parser.add_argument(
        "--lr-c", type=float, nargs="+", default=list(DEFAULT_CS), help="LR: the Cs tried on valid"
    )
    parser.add_argument(
        "--block-weight",
        nargs="+",
        type=parse_block_weight,
        default=list(DEFAULT_BLOCK_WEIGHTS.items()),
        help="LR: GROUP=WEIGHT, a group's columns scaled (a weaker penalty on them)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="train on a GPU (default: if any)")
    parser.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="Ray Train runs")
    parser.add_argument(
        "--limit-students",
        type=int,
        default=None,
        help="use only the first N students of each split (smoke runs)",
    )
    add_registration_flags(parser)
    return parser.parse_args(argv)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: one fold's training, epochs reported, the artifact checkpointed."""
    import ray.train

    setup_logging()
    device = torch.device("cuda" if config["use_gpu"] and torch.cuda.is_available() else "cpu")
    args = argparse.Namespace(**config["args"])
    log.info("training %s on %s fold %d, device %s", args.model, args.dataset, args.fold, device)
    fold = fit_and_test(
        args, device=device, on_epoch=lambda record: ray.train.report({**record, "final": False})
    )
    tracer = KnowledgeTracer(
        fold.model, fold.vocab, fold.priors, fold.skill_names, max_history=args.window
    )
    with tempfile.TemporaryDirectory() as tmp:
        tracer.save(tmp)
        (Path(tmp) / METRICS_FILE).write_text(json.dumps(fold.metrics, indent=2) + "\n")
        scalars = {k: v for k, v in fold.metrics.items() if isinstance(v, int | float)}
        ray.train.report(
            {**scalars, "final": True}, checkpoint=ray.train.Checkpoint.from_directory(tmp)
        )


def run_training(args: argparse.Namespace) -> Path:
    """One fold as a Ray Train job (one worker, a GPU when asked or present); the final
    checkpoint's local copy: the artifact's files plus ``metrics.json``."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(args.threads)
    use_gpu = args.gpu or ray.cluster_resources().get("GPU", 0) > 0
    run_name = f"difficulty-{args.model}-{args.dataset}-fold{args.fold}-{int(time.time())}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"args": vars(args), "use_gpu": use_gpu},
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=use_gpu, resources_per_worker={"CPU": args.threads}
        ),
        run_config=RunConfig(name=run_name, storage_path=str(args.storage.resolve())),
    )
    result = trainer.fit()
    if result.error or result.checkpoint is None:
        raise RuntimeError(f"training failed: {result.error or 'no checkpoint reported'}")
    final_dir = args.storage.resolve() / run_name / "final"
    result.checkpoint.to_directory(str(final_dir))
    log.info("final checkpoint: %s", final_dir)
    return final_dir


def train_network(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """DKT or AKT through Ray Train: (tracer, metrics, the run config's model part)."""
    final_dir = run_training(args)
    metrics = json.loads((final_dir / METRICS_FILE).read_text())
    tracer = KnowledgeTracer.from_artifact(final_dir)
    config = {
        args.model: tracer.model.config.to_dict(),
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "window": args.window,
        # Relative to --storage: the same run folder on whichever machine holds the runs.
        "ray_train_checkpoint": str(final_dir.relative_to(args.storage.resolve())),
    }
    return tracer, metrics, config


def train_lr(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The LR tracer, fitted in this process (module docstring)."""
    fit = fit_fold(
        args.data,
        args.dataset,
        args.fold,
        limit_students=args.limit_students,
        cs=args.lr_c,
        block_weights=dict(args.block_weight),
    )
    metrics = fit.predictions.metrics
    config = {
        LR_MODEL: {"features": fit.tracer.spec.to_dict(), "C": metrics["C"]},
        "cs": args.lr_c,
        "block_weights": dict(args.block_weight),
    }
    return fit.tracer, metrics, config


TRAINERS = {LR_MODEL: train_lr}  # anything else is a network trained by Ray Train


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    # Before training: a long run is not spent on an artifact whose code no commit holds.
    version = None if args.no_register else committed_code_version(allow_dirty=args.allow_dirty)
    tracer, metrics, model_config = TRAINERS.get(args.model, train_network)(args)
    result: dict[str, Any] = {"metrics": metrics}
    if args.no_register:
        return result
    run_config = {
        "model": args.model,
        **model_config,
        "max_history": tracer.max_history,
        "fold": args.fold,
        "dataset": args.dataset,
        "seed": args.seed,
        "limit_students": args.limit_students,
        "num_items": len(tracer.vocab.items),
        "global_prior": tracer.priors.global_prior,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tracer.save(tmp)  # the artifact's files only, not the checkpoint's metrics.json
        meta = ModelRegistry(args.registry).register(
            MODEL_NAME,
            tmp,
            dataset=f"{args.dataset} fold {args.fold}",
            code_version=version,
            metrics=metrics,
            config=run_config,
        )
    log.info(
        "registered %s %s at %s",
        MODEL_NAME,
        meta.version,
        Path(args.registry) / MODEL_NAME / meta.version,
    )
    result["version"] = meta.version
    return result


if __name__ == "__main__":
    main()
