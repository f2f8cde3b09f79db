"""The benchmark's texts: what learners write, at the length they write it.

A fixed list, the same in every run and for every contender: all learner messages of
tests/data (dev and test splits, 176) and GoEmotions test sentences of 10-25 words (Reddit
comments, the encoder's fine-tuning domain) up to ``n``, shuffled with a fixed seed. The issue
measured the gap on texts of this length; the README's older figures came from short phrases,
which hid it (padding and attention cost grows with the longest text of a batch).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
LEARNER_FILES = [
    REPO_ROOT / "tests" / "data" / f"learner_messages_{s}.jsonl" for s in ("dev", "test")
]
GOEMOTIONS_TEST = Path("goemotions") / "original" / "test.tsv"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
MIN_WORDS, MAX_WORDS = 10, 25
SEED = 18
DEFAULT_N = 512


def data_dir() -> Path:
    """As pipelines.common.shared_data_dir: $TUTOR_DATA_DIR, else ../shared/data."""
    return Path(os.environ.get("TUTOR_DATA_DIR", DEFAULT_DATA_DIR))


def learner_messages() -> list[str]:
    texts = []
    for path in LEARNER_FILES:
        for line in path.read_text().splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


def goemotions_sentences(root: Path | None = None) -> list[str]:
    """GoEmotions test comments of MIN_WORDS..MAX_WORDS words, in file order."""
    path = (root or data_dir()) / GOEMOTIONS_TEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set TUTOR_DATA_DIR to the shared data folder")
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("\t", 1)[0].strip()
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            texts.append(text)
    return texts


def benchmark_texts(n: int = DEFAULT_N, root: Path | None = None) -> list[str]:
    """``n`` texts: every learner message, then GoEmotions sentences drawn with SEED; shuffled."""
    rng = random.Random(SEED)
    learner = learner_messages()[:n]
    pool = goemotions_sentences(root)
    texts = learner + rng.sample(pool, n - len(learner))
    rng.shuffle(texts)
    return texts


def length_stats(texts: list[str], tokenizer=None) -> dict:
    """Words per text (and tokens, with the encoder's own tokenizer when given)."""

    def summary(lengths: list[int]) -> dict:
        a = np.asarray(lengths)
        return {
            "min": int(a.min()),
            "p50": float(np.percentile(a, 50)),
            "mean": round(float(a.mean()), 2),
            "p90": float(np.percentile(a, 90)),
            "max": int(a.max()),
        }

    words = [len(t.split()) for t in texts]
    stats = {
        "n": len(texts),
        "words": summary(words),
        "share_10_to_25_words": round(
            sum(MIN_WORDS <= w <= MAX_WORDS for w in words) / len(words), 3
        ),
        "sources": {"learner_messages": "tests/data dev+test", "goemotions": str(GOEMOTIONS_TEST)},
    }
    if tokenizer is not None:
        # With [CLS] and [SEP], as the encoder sees them.
        stats["tokens"] = summary([len(ids) for ids in tokenizer(texts)["input_ids"]])
    return stats
