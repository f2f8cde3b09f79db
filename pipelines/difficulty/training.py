"""One fold of knowledge-tracing training in plain PyTorch: no Ray here.

``fit_and_test`` trains on ``train_k``, keeps the epoch with the best leak-free AUC on
``valid_k``, fits the output temperature on ``valid_k`` and measures ``test_k``; the metric code
is ``pipelines.difficulty.evaluate``'s. It also returns the leak-free valid and test predictions
(``FoldPredictions``, canonical row order; each row reads at most the ``--window - 1`` rows
before it in its non-overlapping window), which the stacked ensemble is fitted on.
``pipelines.difficulty.train`` runs it as a Ray Train job and registers the result;
``pipelines.difficulty.cross_validate`` runs it per fold.

Architectures are registered in ``ARCHITECTURES`` (name -> how to build it from the run's
arguments, and its default dropout); each model computes its own loss in ``forward``, so the
loop below never knows which one it trains.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from pipelines.difficulty.evaluate import evaluate_model, fit_valid_temperature, predict_rows
from pipelines.difficulty.fold_predictions import FoldPredictions, SplitPredictions

log = logging.getLogger("pipelines.difficulty.training")


def build_dkt(args: argparse.Namespace, vocab: Vocabulary, dropout: float) -> DKT:
    return DKT(
        DKTConfig(
            num_skills=vocab.num_skills,
            hidden_size=args.hidden_size,
            embedding_dim=args.embedding_dim,
            dropout=dropout,
        )
    )


def build_akt(args: argparse.Namespace, vocab: Vocabulary, dropout: float) -> AKT:
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


@dataclass(frozen=True)
class Architecture:
    build: Callable[[argparse.Namespace, Vocabulary, float], DKT | AKT]
    default_dropout: float


# The name is the artifact config's "architecture" (models.difficulty.tracer.ARCHITECTURES).
ARCHITECTURES: dict[str, Architecture] = {
    "dkt": Architecture(build_dkt, default_dropout=0.4),
    "akt": Architecture(build_akt, default_dropout=0.2),
}


def build_model(args: argparse.Namespace, vocab: Vocabulary) -> DKT | AKT:
    """The network ``args.model`` names, sized to ``vocab``; ``--dropout`` or its default."""
    if args.model not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {args.model!r}; known: {sorted(ARCHITECTURES)}")
    architecture = ARCHITECTURES[args.model]
    dropout = architecture.default_dropout if args.dropout is None else args.dropout
    return architecture.build(args, vocab, dropout)


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
    """One pass over ``chunks``; the mean loss per real (unpadded) row."""
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
    its target band, become calibrated.
    """
    temperature = fit_valid_temperature(model, vocab, priors, valid, **eval_kwargs)
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
    # Leak-free valid and test predictions in canonical order (the stacked ensemble's input).
    predictions: FoldPredictions


def load_fold(args: argparse.Namespace) -> dict[str, list[StudentSequence]]:
    """The fold's train, valid and test students (the first ``--limit-students`` of each)."""
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
    return splits


def fit_and_test(
    args: argparse.Namespace,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FoldResult:
    """Train on ``train_k``, keep the epoch with the best leak-free valid AUC, test on test_k.

    ``args`` as ``pipelines.difficulty.train.parse_args`` makes them; ``on_epoch`` receives
    each epoch's record (Ray Train reports it).
    """
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.perf_counter()
    splits = load_fold(args)
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
    leaky = args.train_protocol == "row"

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
        valid = evaluate_model(model, vocab, priors, splits["valid"], leaky=leaky, **eval_kwargs)
        if leaky:  # the leaky model is picked by its own protocol
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
            "per-row (leaky)" if leaky else "leak-free",
            valid["auc"],
            valid["acc"],
            " *" if improved else "",
            time.perf_counter() - t0,
        )
        if epoch - best_epoch >= args.patience:
            log.info("no better valid AUC for %d epochs: stopping", args.patience)
            break
    assert best_state is not None, "no epoch ran (--epochs must be >= 1)"
    model.load_state_dict(best_state)

    uncalibrated_ece = None
    if args.calibrate:
        uncalibrated_ece = evaluate_model(
            model, vocab, priors, splits["test"], leaky=False, **eval_kwargs
        )["calibration"]["ece"]
        calibrate(model, vocab, priors, splits["valid"], eval_kwargs)
    # The served probabilities (after the temperature), kept for the stacked ensemble.
    valid_probs = predict_rows(model, vocab, priors, splits["valid"], **eval_kwargs)[1]
    test_rows = predict_rows(model, vocab, priors, splits["test"], **eval_kwargs)
    test = evaluate_model(
        model, vocab, priors, splits["test"], predictions=test_rows, **eval_kwargs
    )
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
    predictions = FoldPredictions(
        valid=SplitPredictions.for_split(splits["valid"], valid_probs),
        test=SplitPredictions.for_split(splits["test"], test_rows[1]),
        metrics=metrics,
    )
    return FoldResult(model.cpu(), vocab, priors, skill_names, metrics, predictions)
