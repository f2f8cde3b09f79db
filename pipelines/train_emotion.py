"""Train the emotion head on GoEmotions and register it as a new ``emotion`` version.

    python -m pipelines.train_emotion --data ../shared/data/goemotions

Steps: encode train/dev/test once with the frozen MiniLM encoder (cached under ``var/`` keyed by
split, file content and encoder, so re-runs skip it), train the head with Adam and keep the
epoch with the best dev macro-F1 (thresholds tuned on dev), tune per-label and per-Ekman-group
thresholds on dev, measure dev and test, and register head + thresholds with the metrics.
A plain script: ``ray job submit -- python -m pipelines.train_emotion`` runs it unchanged.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.emotion import EmotionHead, EmotionHeadConfig, save_artifact
from models.emotion_metrics import (
    EKMAN_METHOD,
    THRESHOLD_GRID,
    ekman_scores,
    ekman_targets,
    evaluate_scores,
    f1_per_label,
    summarize_per_label,
    tune_thresholds,
)
from models.encoder import DEFAULT_MAX_LENGTH, ENCODER_NAME, SentenceEncoder, minilm_dir
from models.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.vocab import GOEMOTIONS_LABELS
from pipelines.common import REPO_ROOT, code_version, setup_logging, use_offline_models

logger = logging.getLogger("train_emotion")

MODEL_NAME = "emotion"
DATASET = "goemotions (original splits)"
SPLITS = ("train", "dev", "test")
DEFAULT_DATA = Path("../shared/data/goemotions")
DEFAULT_CACHE = REPO_ROOT / "var" / "emotion_embeddings"
# Rows of the test split (in file order) whose metrics are registered too, so that
# ``evaluate_emotion --limit`` with this many rows can check the artifact end to end.
FINGERPRINT_ROWS = 200


def read_split(data_dir: Path, split: str) -> tuple[list[str], np.ndarray]:
    """``original/<split>.tsv`` -> (texts, multi-hot targets [n, 28] as bool)."""
    path = Path(data_dir) / "original" / f"{split}.tsv"
    texts: list[str] = []
    rows: list[list[int]] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields")
            texts.append(parts[0])
            rows.append([int(x) for x in parts[1].split(",")])
    targets = np.zeros((len(texts), len(GOEMOTIONS_LABELS)), dtype=bool)
    for i, ids in enumerate(rows):
        targets[i, ids] = True
    return texts, targets


def check_labels_file(data_dir: Path) -> None:
    """The dataset's label names must be ``GOEMOTIONS_LABELS`` in the same order."""
    path = Path(data_dir) / "original" / "labels.txt"
    if path.is_file():
        names = tuple(path.read_text().split())
        if names != GOEMOTIONS_LABELS:
            raise ValueError(f"{path} does not match models.vocab.GOEMOTIONS_LABELS")


def _cache_key(path: Path, encoder: str, max_length: int) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(f"|{encoder}|{max_length}|mean|l2".encode())
    return digest.hexdigest()[:16]


def load_embeddings(
    data_dir: Path,
    cache_dir: Path,
    encoder_factory,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Per split: (embeddings [n, 384] float32, targets [n, 28] bool, texts), cached on disk."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    encoder = None
    out = {}
    for split in SPLITS:
        texts, targets = read_split(data_dir, split)
        key = _cache_key(Path(data_dir) / "original" / f"{split}.tsv", ENCODER_NAME, max_length)
        cached = cache_dir / f"{split}-{key}.npy"
        if cached.is_file():
            emb = np.load(cached)
            logger.info("%s: %d embeddings from cache %s", split, len(emb), cached)
        else:
            if encoder is None:
                encoder = encoder_factory()
            emb = _encode_with_progress(encoder, texts, split)
            tmp = cached.with_suffix(".tmp.npy")
            np.save(tmp, emb)
            os.replace(tmp, cached)
            logger.info("%s: cached embeddings at %s", split, cached)
        if emb.shape != (len(texts), 384):
            raise ValueError(f"{cached}: shape {emb.shape} does not match {len(texts)} texts")
        out[split] = (emb, targets, texts)
    return out


def _encode_with_progress(encoder: SentenceEncoder, texts: list[str], split: str) -> np.ndarray:
    chunk = 2048
    parts = []
    start = time.perf_counter()
    for i in range(0, len(texts), chunk):
        parts.append(encoder.encode(texts[i : i + chunk]).numpy())
        done = min(i + chunk, len(texts))
        rate = done / (time.perf_counter() - start)
        logger.info(
            "encoding %s: %d/%d (%.0f texts/s, ~%.0f s left)",
            split, done, len(texts), rate, (len(texts) - done) / rate,
        )  # fmt: skip
    return np.concatenate(parts).astype(np.float32)


def _scores(head: EmotionHead, x: torch.Tensor) -> np.ndarray:
    head.eval()
    with torch.inference_mode():
        logits, _ = head(x)
    return torch.sigmoid(logits).double().numpy()


def train_head(
    train: tuple[np.ndarray, np.ndarray],
    dev: tuple[np.ndarray, np.ndarray],
    config: EmotionHeadConfig,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> tuple[EmotionHead, list[dict]]:
    """Adam on BCE; returns the head of the epoch with the best dev macro-F1 (tuned thresholds)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_train = torch.from_numpy(train[0]).float()
    y_train = torch.from_numpy(train[1]).float()
    x_dev = torch.from_numpy(dev[0]).float()
    y_dev = dev[1]
    head = EmotionHead(config)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    best_state, best_f1 = None, -1.0
    for epoch in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            _, loss = head(x_train[idx], y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        dev_scores = _scores(head, x_dev)
        thresholds = tune_thresholds(dev_scores, y_dev)
        dev_f1 = float(f1_per_label(dev_scores >= thresholds, y_dev).mean())
        dev_f1_half = float(f1_per_label(dev_scores >= 0.5, y_dev).mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(total / len(perm), 5),
                "dev_macro_f1_tuned": round(dev_f1, 4),
                "dev_macro_f1_at_0.5": round(dev_f1_half, 4),
            }
        )
        logger.info(
            "epoch %d: train loss %.4f, dev macro-F1 %.4f (tuned thresholds), %.4f (at 0.5)",
            epoch, total / len(perm), dev_f1, dev_f1_half,
        )  # fmt: skip
        if dev_f1 > best_f1:
            best_f1, best_state = dev_f1, copy.deepcopy(head.state_dict())
    assert best_state is not None
    head.load_state_dict(best_state)
    return head.eval(), history


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GoEmotions folder")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="embedding cache")
    # Defaults chosen on dev (frozen-embedding cache, seeds 0-2): a linear head peaks at dev
    # macro-F1 0.402 (lr 1e-2, every seed); this MLP reaches 0.413-0.420 on every seed tried.
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=512, help="0: linear head; >0: MLP")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2, help="torch threads (at most 2 here)")
    p.add_argument("--version", default=None, help="e.g. v1; default: the next free version")
    p.add_argument("--dry-run", action="store_true", help="train and report, do not register")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    use_offline_models(args.threads)
    np.random.seed(args.seed)
    data_dir = args.data.resolve()
    if not (data_dir / "original").is_dir():
        raise SystemExit(f"no GoEmotions data at {data_dir} (expected original/*.tsv)")
    check_labels_file(data_dir)
    started = time.perf_counter()

    data = load_embeddings(data_dir, args.cache_dir, lambda: SentenceEncoder(minilm_dir()))
    encoded_s = time.perf_counter() - started
    (x_tr, y_tr, _), (x_dev, y_dev, _), (x_te, y_te, _) = (data[s] for s in SPLITS)

    config = EmotionHeadConfig(hidden_dim=args.hidden_dim, dropout=args.dropout)
    head, history = train_head(
        (x_tr, y_tr),
        (x_dev, y_dev),
        config,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    best_epoch = max(history, key=lambda h: h["dev_macro_f1_tuned"])["epoch"]

    dev_scores = _scores(head, torch.from_numpy(x_dev))
    test_scores = _scores(head, torch.from_numpy(x_te))
    thresholds = tune_thresholds(dev_scores, y_dev)
    ekman_thresholds = tune_thresholds(ekman_scores(dev_scores), ekman_targets(y_dev))
    dev_metrics = evaluate_scores(dev_scores, y_dev, thresholds, ekman_thresholds)
    test_metrics = evaluate_scores(test_scores, y_te, thresholds, ekman_thresholds)
    head_rows = evaluate_scores(
        test_scores[:FINGERPRINT_ROWS], y_te[:FINGERPRINT_ROWS], thresholds, ekman_thresholds
    )
    metrics = {
        "test_macro_f1": round(test_metrics["macro_f1"], 4),
        "test_ekman_macro_f1": round(test_metrics["ekman_macro_f1"], 4),
        "test_micro_f1": round(test_metrics["micro_f1"], 4),
        "dev_macro_f1": round(dev_metrics["macro_f1"], 4),
        "dev_ekman_macro_f1": round(dev_metrics["ekman_macro_f1"], 4),
        "ekman_method": EKMAN_METHOD,
        "threshold_selection": "per label, grid 0.05..0.95 step 0.05, max F1 on dev",
        "test": _rounded(test_metrics),
        "dev": _rounded(dev_metrics),
        "test_per_label_summary": summarize_per_label(test_metrics["per_label_f1"]),
        f"test_first{FINGERPRINT_ROWS}": {
            k: round(head_rows[k], 6) for k in ("macro_f1", "micro_f1", "ekman_macro_f1")
        },
    }
    train_config = {
        "encoder": ENCODER_NAME,
        "encoder_max_length": DEFAULT_MAX_LENGTH,
        "pooling": "mean over attention mask, L2-normalised",
        "head": asdict(config),
        "optimizer": "adam",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "best_epoch": best_epoch,
        "seed": args.seed,
        "threshold_grid": [float(t) for t in THRESHOLD_GRID],
        "history": history,
        "encode_seconds": round(encoded_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    logger.info(
        "test macro-F1 %.4f (28 labels), Ekman macro-F1 %.4f, micro-F1 %.4f; dev macro-F1 %.4f",
        test_metrics["macro_f1"], test_metrics["ekman_macro_f1"], test_metrics["micro_f1"],
        dev_metrics["macro_f1"],
    )  # fmt: skip
    logger.info("test per-label F1: %s", metrics["test_per_label_summary"])
    if args.dry_run:
        return {"metrics": metrics, "config": train_config}

    with tempfile.TemporaryDirectory(prefix="emotion-") as tmp:
        save_artifact(tmp, head, thresholds, ekman_thresholds)
        meta = ModelRegistry(args.registry).register(
            MODEL_NAME,
            tmp,
            dataset=DATASET,
            code_version=code_version(),
            metrics=metrics,
            config=train_config,
            version=args.version,
        )
    logger.info("registered %s %s in %s", MODEL_NAME, meta.version, args.registry)
    return {"metrics": metrics, "config": train_config, "version": meta.version}


def _rounded(m: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


if __name__ == "__main__":
    main()
