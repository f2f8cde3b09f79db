"""The knowledge-tracing harness: every model, every fold, every dataset, one protocol.

    python -m pipelines.difficulty.cross_validate [--datasets assist2009_pid assist2015 statics]
        [--models dkt akt lr stack] [--folds 1 2 3 4 5] [--parallel N]
        [--out reports/difficulty_cv.json] [--stack-bases dkt akt lr] [-- <train.py flags>]

Each (dataset, model, fold) trains on ``train_k``, chooses what it chooses on ``valid_k``
(epochs and temperature for DKT and the tracer, ``pipelines.difficulty.training.fit_and_test``;
C and calibration for the feature model, ``pipelines.difficulty.lr_fit.fit_predict_fold``) and
measures ``test_k`` leak-free; nothing is registered. Every run returns its leak-free valid and
test predictions in canonical row order (``pipelines.difficulty.fold_predictions``); the harness
checks them against the split files and saves them to
``<predictions-dir>/<dataset>/<model>_fold<k>.npz`` (default ``var/difficulty_cv``;
``var/difficulty_cv_limit<N>`` for ``--limit-students N`` runs, so smoke runs never overwrite a
full run's). ``stack`` is no separate training: as soon as a (dataset, fold)'s base models are
in, a logistic regression over their logits is fitted on valid and measured on test
(``pipelines.difficulty.stacking``); bases not in ``--models`` are read from their saved
``.npz`` (so a stack can be refitted without retraining).

Runs are Ray tasks, so on a cluster they spread over its nodes (``ray job submit -- python -m
pipelines.difficulty.cross_validate``); ``--parallel`` caps how many run at once here. Writes
one report over all datasets (``pipelines.difficulty.cv_report``): per-fold figures, mean and
standard deviation, paired AUC gains over DKT (and the stack's over its best base), calibrated
ECE for every model, and the reliability diagrams (``<out stem>_reliability.png``).
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.difficulty.data import load_split
from pipelines.common import REPO_ROOT, setup_logging
from pipelines.difficulty.cv_report import (
    markdown_table,
    plot_cv_reliability,
    run_record,
    write_report,
)
from pipelines.difficulty.evaluate import DEFAULT_DATA_DIR
from pipelines.difficulty.fold_predictions import (
    FoldPredictions,
    canonical_history_len,
    canonical_labels,
    load_fold_predictions,
    save_fold_predictions,
)
from pipelines.difficulty.stacking import fit_predict_stack

log = logging.getLogger("pipelines.difficulty.cross_validate")
DATASETS = ("assist2009_pid", "assist2015", "statics")
# Settings per neural architecture (chosen on assist2009_pid fold 1's valid split).
MODEL_ARGS: dict[str, list[str]] = {
    "dkt": ["--model", "dkt", "--dropout", "0.4"],
    "akt": ["--model", "akt", "--dropout", "0.2", "--item-bias"],
    # The same with AKT's own four choices (models/difficulty/akt.py's options).
    "akt-full": [
        "--model", "akt", "--dropout", "0.2", "--item-bias", "--decay", "context",
        "--output-reads", "embedding", "--output-layers", "2", "--shared-query-key",
    ],
}  # fmt: skip
STACK = "stack"


def is_stack(model: str) -> bool:
    """``stack`` or a named one, ``stack:<base>+<base>...``."""
    return model == STACK or model.startswith(STACK + ":")


PREDICTIONS_DIR = REPO_ROOT / "var" / "difficulty_cv"


# A base model: (dataset, fold, data dir, limit_students, train.py flags) -> its predictions.
Runner = Callable[..., FoldPredictions]


def run_neural(
    model: str,
    dataset: str,
    fold: int,
    *,
    data: Path,
    limit_students: int | None,
    extra: Sequence[str],
) -> FoldPredictions:
    """DKT or the tracer: ``fit_and_test`` with the model's settings and the run's flags
    (``extra`` carries ``--limit-students`` already)."""
    from pipelines.difficulty.train import parse_args
    from pipelines.difficulty.training import fit_and_test

    args = parse_args(
        [
            *MODEL_ARGS[model],
            "--dataset",
            dataset,
            "--fold",
            str(fold),
            "--data",
            str(data),
            "--no-register",
            *extra,
        ]
    )
    return fit_and_test(args).predictions


def run_feature_model(
    dataset: str, fold: int, *, data: Path, limit_students: int | None, extra: Sequence[str]
) -> FoldPredictions:
    """The feature-based logistic regression (its own flags: none of ``extra`` applies)."""
    from pipelines.difficulty.lr_fit import fit_predict_fold

    return fit_predict_fold(data, dataset, fold, limit_students=limit_students)


RUNNERS: dict[str, Runner] = {
    **{name: functools.partial(run_neural, name) for name in MODEL_ARGS},
    "lr": run_feature_model,
}


@dataclass(frozen=True)
class Job:
    dataset: str
    model: str
    fold: int
    runner: Runner
    data: Path
    limit_students: int | None
    extra: tuple[str, ...]


def call_job(job: Job) -> FoldPredictions:
    setup_logging()
    return job.runner(
        job.dataset, job.fold, data=job.data, limit_students=job.limit_students, extra=job.extra
    )


Executor = Callable[..., Iterator[tuple[Job, FoldPredictions]]]


def ray_executor(jobs: list[Job], *, parallel: int, threads: int) -> Iterator[tuple[Job, Any]]:
    """Each job a Ray task of ``threads`` CPUs, at most ``parallel`` at once; results as done."""
    if not jobs:  # a stack refitted from saved predictions needs no Ray
        return
    import ray

    ray.init(num_cpus=parallel * threads, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=threads)(call_job)
    pending = {remote.remote(job): job for job in jobs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(done[0]), ray.get(done[0])


def local_executor(jobs: list[Job], **_: Any) -> Iterator[tuple[Job, FoldPredictions]]:
    """In this process, one after the other (tests; debugging)."""
    for job in jobs:
        yield job, call_job(job)


@dataclass
class HarnessConfig:
    datasets: list[str]
    models: list[str]
    folds: list[int]
    data: Path
    out: Path
    extra: list[str] = field(default_factory=list)  # pipelines.difficulty.train flags
    limit_students: int | None = None
    stack_bases: list[str] | None = None  # default: every other model of ``models``
    predictions_dir: Path | None = None
    parallel: int = 1
    threads: int = 1

    def bases(self) -> list[str]:
        """The bases of ``stack`` (the unnamed one)."""
        if self.stack_bases is not None:
            return list(self.stack_bases)
        return [m for m in self.models if not is_stack(m)]

    def stacks(self) -> dict[str, list[str]]:
        """Every stack in ``models`` -> its bases: ``stack`` those of :meth:`bases`,
        ``stack:dkt+lr`` the ones it names (a cheaper stack measured beside the full one)."""
        return {
            m: self.bases() if m == STACK else m.split(":", 1)[1].split("+")
            for m in self.models
            if is_stack(m)
        }

    def prediction_path(self, dataset: str, model: str, fold: int) -> Path:
        root = self.predictions_dir
        if root is None:
            root = PREDICTIONS_DIR
            if self.limit_students is not None:
                root = root.with_name(f"{root.name}_limit{self.limit_students}")
        return root / dataset / f"{model}_fold{fold}.npz"


class SplitCheck:
    """The split files' canonical labels and history lengths, read once per (dataset, fold)."""

    def __init__(self, data: Path, limit_students: int | None) -> None:
        self.data, self.limit = data, limit_students
        self._cache: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}

    def expected(self, dataset: str, fold: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        key = (dataset, fold, split)
        if key not in self._cache:
            students = load_split(self.data, dataset, split, fold)[: self.limit]
            self._cache[key] = (canonical_labels(students), canonical_history_len(students))
        return self._cache[key]

    def __call__(self, name: str, dataset: str, fold: int, predictions: FoldPredictions) -> None:
        for split in ("valid", "test"):
            labels, history = self.expected(dataset, fold, split)
            part = getattr(predictions, split)
            if not (
                np.array_equal(part.labels, labels) and np.array_equal(part.history_len, history)
            ):
                raise ValueError(
                    f"{name} {dataset} fold {fold}: its {split} predictions ({len(part)} rows) "
                    f"are not the split file's {len(labels)} rows in canonical order"
                )


def run_harness(
    config: HarnessConfig,
    *,
    runners: dict[str, Runner] | None = None,
    executor: Executor = ray_executor,
) -> dict[str, Any]:
    """Every base run, each (dataset, fold)'s stack as soon as its bases are in, the report
    rewritten after every run (a long harness stopped early keeps what it measured)."""
    runners = RUNNERS if runners is None else runners
    stacks = config.stacks()
    bases = list(dict.fromkeys(b for stack_bases in stacks.values() for b in stack_bases))
    stacking = bool(stacks)
    to_run = [m for m in config.models if not is_stack(m)]
    unknown = [m for m in to_run + bases if m not in runners]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {sorted(runners)} and {STACK!r}")
    saved = [m for m in bases if m not in to_run]
    for dataset in config.datasets:
        for fold in config.folds:
            for model in saved:
                if not config.prediction_path(dataset, model, fold).is_file():
                    raise FileNotFoundError(
                        f"stack base {model!r} is neither run nor saved: "
                        f"{config.prediction_path(dataset, model, fold)}"
                    )
    check = SplitCheck(config.data, config.limit_students)
    extra = ("--threads", str(config.threads), *config.extra)
    if config.limit_students is not None:
        extra += ("--limit-students", str(config.limit_students))
    jobs = [
        Job(dataset, model, fold, runners[model], config.data, config.limit_students, extra)
        for dataset in config.datasets
        for fold in config.folds
        for model in to_run
    ]
    pending_stacks = {(d, f, st) for d in config.datasets for f in config.folds for st in stacks}
    held: dict[tuple[str, int], dict[str, FoldPredictions]] = {}
    runs: list[dict[str, Any]] = []
    model_args = {m: MODEL_ARGS.get(m, m) for m in config.models}

    def record(
        dataset: str, model: str, fold: int, predictions: FoldPredictions, *, save: bool = True
    ) -> None:
        check(model, dataset, fold, predictions)
        if save:
            save_fold_predictions(config.prediction_path(dataset, model, fold), predictions)
        run = run_record(dataset, model, fold, predictions, config.limit_students)
        run["from_saved_predictions"] = not save
        runs.append(run)
        log.info(
            "%s %s fold %d: leak-free AUC %.4f ACC %.4f ECE %.4f",
            dataset,
            model,
            fold,
            run["test_auc"],
            run["test_acc"],
            run["test_ece"],
        )
        write_report(
            config.out, runs, model_args=model_args, extra=extra, stack_bases=stacks, complete=False
        )

    def maybe_stack(dataset: str, fold: int) -> None:
        have = held.setdefault((dataset, fold), {})
        for model in saved:
            if model not in have:
                have[model] = load_fold_predictions(config.prediction_path(dataset, model, fold))
                # In the report too, so that the stack's gains are read against its bases.
                record(dataset, model, fold, have[model], save=False)
        for stack, stack_bases in stacks.items():
            if (dataset, fold, stack) in pending_stacks and all(b in have for b in stack_bases):
                pending_stacks.discard((dataset, fold, stack))
                record(dataset, stack, fold, fit_predict_stack({b: have[b] for b in stack_bases}))
        if not any(p[:2] == (dataset, fold) for p in pending_stacks):
            del held[(dataset, fold)]  # free the arrays: a full run holds 45 of them otherwise

    for job, predictions in executor(jobs, parallel=config.parallel, threads=config.threads):
        record(job.dataset, job.model, job.fold, predictions)
        if stacking and job.model in bases:
            held.setdefault((job.dataset, job.fold), {})[job.model] = predictions
            maybe_stack(job.dataset, job.fold)
    for dataset, fold in sorted({p[:2] for p in pending_stacks}):  # bases all saved ones
        maybe_stack(dataset, fold)
    report = write_report(
        config.out, runs, model_args=model_args, extra=extra, stack_bases=stacks, complete=True
    )
    report["reliability_png"] = str(
        plot_cv_reliability(runs, config.out.with_name(f"{config.out.stem}_reliability.png"))
    )
    return report


def parse_args(argv: Sequence[str] | None) -> HarnessConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["dkt", "akt"],
        help=f"of {sorted(RUNNERS)}, {STACK!r} (over --stack-bases) and stack:<a>+<b> stacks",
    )
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (Ray tasks)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPUs) per run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "difficulty_cv.json")
    parser.add_argument(
        "--limit-students",
        type=int,
        default=None,
        help="the first N students of each split (smoke runs)",
    )
    parser.add_argument(
        "--stack-bases",
        nargs="+",
        default=None,
        choices=list(RUNNERS),
        help="the stack's base models (default: the other --models)",
    )
    parser.add_argument(
        "--predictions-dir",
        type=Path,
        default=None,
        help=f"default {PREDICTIONS_DIR.relative_to(REPO_ROOT)}"
        "[_limit<N>]/<dataset>/<model>_fold<k>.npz",
    )
    parser.add_argument(
        "extra", nargs="*", help="after --: more pipelines.difficulty.train arguments"
    )
    args = parser.parse_args(argv)
    if "--limit-students" in args.extra:
        parser.error("give --limit-students to the harness (before --): every model reads it")
    return HarnessConfig(
        datasets=args.datasets,
        models=args.models,
        folds=args.folds,
        data=args.data,
        out=args.out,
        extra=args.extra,
        limit_students=args.limit_students,
        stack_bases=args.stack_bases,
        predictions_dir=args.predictions_dir,
        parallel=args.parallel,
        threads=args.threads,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    setup_logging()
    from pipelines.difficulty.train import parse_args as train_args

    train_args(["--no-register", *config.extra])  # a bad flag fails now, not in every task
    report = run_harness(config)
    print(markdown_table(report["summary"]))
    print(f"report: {config.out}\nreliability diagram: {report['reliability_png']}")
    return report


if __name__ == "__main__":
    main()
