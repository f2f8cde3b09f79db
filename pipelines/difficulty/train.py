"""Train a difficulty model (DKT or the attentive AKT) on one fold and register it.

    python -m pipelines.difficulty.train [--model dkt|akt] [--dataset assist2009_pid] [--fold 1]

A Ray Train job (``TorchTrainer``, one worker, a GPU when the cluster has one or ``--gpu``):
each epoch's train loss and valid AUC are reported, the final artifact is the run's checkpoint,
and the driver registers it. Runs locally (a private Ray) or under ``ray job submit``.

Trains on ``train_k``, picks the epoch with the best leak-free AUC on ``valid_k``, and reports
on ``test_k`` the leak-free AUC/accuracy (the figure to quote), the per-row ("leaky") AUC early
papers reported, and a skill-prior baseline, all from ``pipelines.difficulty.evaluate``'s metric
code. Training uses the same leak-free gather as evaluation and serving. Sequences are cut into
windows of ``--window`` rows (also the served model's ``max_history``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.common.calibration import fit_temperature
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.difficulty.akt import AKT, AKTConfig
from models.difficulty.data import (
    Priors,
    StudentSequence,
    Vocabulary,
    has_item_ids,
    load_split,
    read_skill_names,
)
from models.difficulty.data import windows as make_windows
from models.difficulty.dkt import DKT, DKTConfig, encode_batch
from models.difficulty.tracer import KnowledgeTracer
from pipelines.common import REPO_ROOT, code_version, init_ray, setup_logging
from pipelines.difficulty.evaluate import (
    DEFAULT_DATA_DIR,
    DEFAULT_DATASET,
    MODEL_NAME,
    evaluate_model,
    predict_rows,
)

log = logging.getLogger("pipelines.difficulty.train")
DEFAULT_STORAGE = REPO_ROOT / "var" / "ray_results"
METRICS_FILE = "metrics.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the kt/ data dir")
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--model", choices=("dkt", "akt"), default="dkt")
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
    parser.add_argument("--dropout", type=float, default=None, help="default: DKT 0.4, AKT 0.2")
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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="train on a GPU (default: if any)")
    parser.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="Ray Train runs")
    parser.add_argument(
        "--limit-students",
        type=int,
        default=None,
        help="use only the first N students of each split (smoke runs)",
    )
    parser.add_argument(
        "--no-register", action="store_true", help="train and evaluate but register nothing"
    )
    return parser.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_bucketed_batches(
    chunks: Sequence[StudentSequence], batch_size: int, rng: random.Random
) -> list[list[StudentSequence]]:
    """Batches of similar length (less padding), in random order."""
    order = sorted(range(len(chunks)), key=lambda i: (len(chunks[i]), rng.random()))
    batches = [
        [chunks[i] for i in order[start : start + batch_size]]
        for start in range(0, len(order), batch_size)
    ]
    rng.shuffle(batches)
    return batches


DEFAULT_DROPOUT = {"dkt": 0.4, "akt": 0.2}


def build_model(args: argparse.Namespace, vocab: Vocabulary) -> DKT | AKT:
    dropout = DEFAULT_DROPOUT[args.model] if args.dropout is None else args.dropout
    if args.model == "dkt":
        return DKT(
            DKTConfig(
                num_skills=vocab.num_skills,
                hidden_size=args.hidden_size,
                embedding_dim=args.embedding_dim,
                dropout=dropout,
            )
        )
    return AKT(
        AKTConfig(
            num_skills=vocab.num_skills,
            num_items=len(vocab.items),
            d_model=args.d_model,
            num_heads=args.heads,
            ffn_dim=args.ffn_dim,
            dropout=dropout,
            rasch_l2=args.rasch_l2,
            item_bias=args.item_bias,
            decay=args.decay,
            output_reads=args.output_reads,
            output_layers=args.output_layers,
            shared_query_key=args.shared_query_key,
        )
    )


def train_epoch(
    model: DKT | AKT,
    optimizer: torch.optim.Optimizer,
    chunks: Sequence[StudentSequence],
    vocab: Vocabulary,
    *,
    batch_size: int,
    rng: random.Random,
    device: torch.device | str = "cpu",
    protocol: str = "attempt",
) -> float:
    model.train()
    total_loss, total_rows = 0.0, 0
    for batch_chunks in length_bucketed_batches(chunks, batch_size, rng):
        batch = encode_batch(batch_chunks, vocab, protocol=protocol).to(device)
        _, loss = model(
            batch.skills,
            batch.correct,
            batch.context_index,
            targets=batch.correct.float(),
            mask=batch.mask,
            items=batch.items,
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        rows = int(batch.mask.sum())
        total_loss += loss.item() * rows
        total_rows += rows
    return total_loss / max(total_rows, 1)


def calibrate(
    model: DKT | AKT,
    vocab: Vocabulary,
    priors: Priors,
    valid: Sequence[StudentSequence],
    eval_kwargs: dict[str, Any],
) -> float:
    """Fit one temperature on the leak-free valid predictions and set it in the model's config.

    AUC is unchanged (a monotone map); the probabilities, which the recommender compares with
    its target band, become calibrated. Rows of skills the model lacks carry their prior, not
    a logit; they are rare enough in valid not to matter to one scalar.
    """
    labels, probs = predict_rows(model, vocab, priors, valid, protocol="attempt", **eval_kwargs)
    clipped = np.clip(probs, 1e-6, 1 - 1e-6)
    logits = np.log(clipped / (1 - clipped)) * model.config.temperature
    temperature = fit_temperature(logits, labels)
    model.config = dataclasses.replace(model.config, temperature=temperature)
    log.info("temperature fitted on valid: %.3f", temperature)
    return temperature


@dataclass
class FoldResult:
    model: DKT | AKT
    vocab: Vocabulary
    priors: Priors
    skill_names: dict[str, str]
    metrics: dict[str, Any]


def fit_and_test(
    args: argparse.Namespace,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FoldResult:
    """Train on ``train_k``, keep the epoch with the best leak-free valid AUC, test on test_k.

    ``on_epoch`` receives each epoch's record (Ray Train reports it).
    """
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.perf_counter()
    splits = {
        split: load_split(args.data, args.dataset, split, args.fold)
        for split in ("train", "valid", "test")
    }
    if args.limit_students is not None:
        splits = {k: v[: args.limit_students] for k, v in splits.items()}
    for split, seqs in splits.items():
        log.info(
            "%s%d: %d students, %d rows", split, args.fold, len(seqs), sum(len(s) for s in seqs)
        )
    vocab = Vocabulary.build(splits["train"], with_items=has_item_ids(args.dataset))
    priors = Priors.compute(splits["train"])
    skill_names_path = Path(args.data) / args.dataset / "skill.json"
    skill_names = read_skill_names(skill_names_path) if skill_names_path.is_file() else {}
    log.info(
        "%s %s: %d skills, %d items; global prior %.4f; %d skill names",
        args.model,
        args.dataset,
        vocab.num_skills,
        len(vocab.items),
        priors.global_prior,
        len(skill_names),
    )

    model = build_model(args, vocab).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_chunks = make_windows(splits["train"], args.window)
    rng = random.Random(args.seed)
    eval_kwargs = {"window": args.window, "batch_size": args.batch_size, "device": device}

    best_auc, best_epoch, best_state, history = -1.0, 0, None, []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch(
            model,
            optimizer,
            train_chunks,
            vocab,
            batch_size=args.batch_size,
            rng=rng,
            device=device,
            protocol=args.train_protocol,
        )
        valid = evaluate_model(
            model, vocab, priors, splits["valid"], leaky=args.train_protocol == "row", **eval_kwargs
        )
        if args.train_protocol == "row":  # the leaky model is picked by its own protocol
            valid["auc"] = valid["per_row_leaky_auc"]
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "valid_auc": valid["auc"],
                "valid_acc": valid["acc"],
            }
        )
        if on_epoch is not None:
            on_epoch(history[-1])
        improved = valid["auc"] > best_auc
        if improved:
            best_auc, best_epoch = valid["auc"], epoch
            best_state = copy.deepcopy(model.state_dict())
        log.info(
            "epoch %d: train loss %.4f | valid %s AUC %.4f ACC %.4f%s | %.1fs",
            epoch,
            loss,
            "per-row (leaky)" if args.train_protocol == "row" else "leak-free",
            valid["auc"],
            valid["acc"],
            " *" if improved else "",
            time.perf_counter() - t0,
        )
        if epoch - best_epoch >= args.patience:
            log.info("no better valid AUC for %d epochs: stopping", args.patience)
            break
    assert best_state is not None
    model.load_state_dict(best_state)

    uncalibrated_ece = None
    if args.calibrate:
        uncalibrated_ece = evaluate_model(
            model, vocab, priors, splits["test"], leaky=False, **eval_kwargs
        )["calibration"]["ece"]
        calibrate(model, vocab, priors, splits["valid"], eval_kwargs)
    test = evaluate_model(model, vocab, priors, splits["test"], **eval_kwargs)
    log.info(
        "test%d (epoch %d): leak-free AUC %.4f ACC %.4f | per-row (leaky) AUC %.4f | "
        "skill-prior baseline AUC %.4f",
        args.fold,
        best_epoch,
        test["auc"],
        test["acc"],
        test["per_row_leaky_auc"],
        test["skill_prior_auc"],
    )

    metrics = {
        "protocol": "leak-free: rows of one problem attempt predicted from the state before it",
        "train_protocol": args.train_protocol,
        "test_auc": test["auc"],
        "test_acc": test["acc"],
        "test_log_loss": test["log_loss"],
        "test_rows": test["rows"],
        "test_students": test["students"],
        "test_per_row_leaky_auc": test["per_row_leaky_auc"],
        "test_skill_prior_auc": test["skill_prior_auc"],
        "test_ece": test["calibration"]["ece"],
        "test_ece_uncalibrated": uncalibrated_ece,
        "temperature": model.config.temperature,
        "test_reliability": test["calibration"],
        "valid_auc": best_auc,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return FoldResult(model.cpu(), vocab, priors, skill_names, metrics)


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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    final_dir = run_training(args)
    metrics = json.loads((final_dir / METRICS_FILE).read_text())
    result: dict[str, Any] = {"metrics": metrics}
    if args.no_register:
        return result
    tracer = KnowledgeTracer.from_artifact(final_dir)
    run_config = {
        "model": args.model,
        args.model: tracer.model.config.to_dict(),
        "max_history": args.window,
        "fold": args.fold,
        "dataset": args.dataset,
        "seed": args.seed,
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "window": args.window,
        "limit_students": args.limit_students,
        "num_items": len(tracer.vocab.items),
        "global_prior": tracer.priors.global_prior,
        "ray_train_checkpoint": str(final_dir),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tracer.save(tmp)  # the artifact's files only, not the checkpoint's metrics.json
        meta = ModelRegistry(args.registry).register(
            MODEL_NAME,
            tmp,
            dataset=f"{args.dataset} fold {args.fold}",
            code_version=code_version(),
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
