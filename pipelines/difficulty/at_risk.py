"""Learners at risk: evaluate the risk model on held-out KT students, or score an export.

    python -m pipelines.difficulty.at_risk evaluate [--data DIR] [--datasets assist2009_pid ...]
        [--out reports/at_risk.json] [--no-reference] [--register] [--limit N]
    python -m pipelines.difficulty.at_risk score --export DIR --out DIR [--store URI]
        [--version latest] [--now EPOCH_S] [--threads 1] [--partitions 16]

``evaluate`` (models/difficulty/risk.py, pipelines/difficulty/at_risk_eval.py) writes the JSON
report, its Markdown and ``at_risk.png`` beside it; ``--register`` also registers the served
model (assist2009_pid fold 1's: trained on its training students, the served tracer's data) as
the next ``difficulty_risk`` version. ``score`` is the Ray Data job over a ``make export``
directory (pipelines/difficulty/at_risk_job.py). Both run alike under ``ray job submit``: every
path comes from an argument, Ray starts only when not already joined, and a failure exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from models.common.registry import ModelRegistry
from models.difficulty.risk import REGISTRY_NAME
from models.difficulty.risk_features import FEATURES
from pipelines.common import (
    code_version,
    committed_code_version,
    init_ray,
    setup_logging,
    shared_data_dir,
)
from pipelines.difficulty import at_risk_eval, at_risk_job, at_risk_report

log = logging.getLogger("pipelines.difficulty.at_risk")
DATASETS = ("assist2009_pid", "assist2015", "statics")
SERVED_DATASET, SERVED_FOLD = "assist2009_pid", 1


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    if args.register and args.limit is not None:
        raise ValueError("--register trains on every student: drop --limit")
    version = committed_code_version() if args.register else code_version()
    started = time.perf_counter()
    kt = Path(args.data) / "kt"
    results, served = {}, None
    for dataset in args.datasets:
        results[dataset], models = at_risk_eval.evaluate_dataset(
            kt, dataset, reference=not args.no_reference, limit=args.limit
        )
        if dataset == SERVED_DATASET:
            served = models[SERVED_FOLD]
    report: dict[str, Any] = {
        "command": "python -m pipelines.difficulty.at_risk " + shlex.join(sys.argv[1:]),
        "code_version": version,
        "protocol": {
            "label": "accuracy of the next 10 attempts < 0.5",
            "points": "every 10th attempt from the 10th on, while 10 attempts follow; features "
            "from the attempts before it; a multi-skill problem's rows are one attempt",
            "folds": "5 student folds; fold k trains on the other folds' test students "
            "(= train_k + valid_k) and is scored on test_k",
            "baseline": "1 - accuracy of the last 10 attempts",
            "precision_at_10": "share at risk among the 10% of a fold's points ranked riskiest "
            "(ties at the cut-off at their mean)",
            "features": list(FEATURES),
        },
        "datasets": results,
    }
    if served is not None:
        fold = results[SERVED_DATASET]["folds"][SERVED_FOLD - 1]
        report["served_model"] = {
            "version": _register(served, fold, version) if args.register else "not registered",
            "dataset": f"{SERVED_DATASET} fold {SERVED_FOLD} (train + valid)",
            "test": {"model": fold["model"], "baseline": fold["baseline"]},
            "coefficients": dict(zip(FEATURES, served.coef.round(4).tolist(), strict=True)),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(at_risk_report.markdown(report))
    at_risk_report.plot(report, out.with_suffix(".png"))
    log.info("wrote %s, .md and .png", out)
    return report


def _register(model: Any, fold: dict[str, Any], version: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        metadata = ModelRegistry().register(
            REGISTRY_NAME,
            tmp,
            dataset=f"{SERVED_DATASET} fold {SERVED_FOLD}",
            code_version=version,
            metrics={"test_" + k: v for k, v in fold["model"].items()}
            | {"test_baseline_" + k: v for k, v in fold["baseline"].items()},
            config={"label": "accuracy of the next 10 answers < 0.5", "features": list(FEATURES)},
        )
    return f"{REGISTRY_NAME}/{metadata.version}"


def score(args: argparse.Namespace) -> dict[str, Any]:
    model, model_version = at_risk_job.load_risk_model(args.version)
    init_ray(args.threads)
    return at_risk_job.score_export(
        Path(args.export),
        Path(args.out),
        model=model,
        model_version=model_version,
        skill_names=at_risk_job.default_skill_names(),
        store_uri=args.store,
        now=args.now,
        partitions=args.partitions,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("evaluate", help="held-out KT students: model vs baseline")
    ev.add_argument("--data", default=str(shared_data_dir()), help="holds kt/ (the KT sets)")
    ev.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ev.add_argument("--out", default="reports/at_risk.json")
    ev.add_argument("--no-reference", action="store_true", help="skip gradient boosting")
    ev.add_argument("--register", action="store_true", help="register the served model")
    ev.add_argument("--limit", type=int, default=None, help="first N students per fold (smoke)")
    sc = commands.add_parser("score", help="score every learner of an export (Ray Data)")
    sc.add_argument("--export", required=True, help="a `make export` directory")
    sc.add_argument("--out", required=True, help="where at_risk.parquet goes")
    sc.add_argument("--store", default=None, help="store URI to write the latest risks into")
    sc.add_argument("--version", default="latest", help=f"{REGISTRY_NAME} version")
    sc.add_argument("--now", type=float, default=None, help="scoring time, epoch s")
    sc.add_argument("--threads", type=int, default=1, help="CPUs of a local Ray (+1)")
    sc.add_argument("--partitions", type=int, default=16, help="of the shuffle by learner")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        summary = evaluate(args) if args.command == "evaluate" else score(args)
    except Exception:
        log.exception("at-risk %s failed", args.command)
        return 1
    if args.command == "score":
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
