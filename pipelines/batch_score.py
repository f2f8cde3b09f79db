"""Re-score everything a store logged with any registered model version (a Ray Data job), and
compare it with the version that served it: the offline gate before a canary.

    python -m pipelines.batch_score --model emotion|difficulty --version v4 \\
        --export var/export --out var/batch_score/emotion_v4 [--measure-raw] \\
        [--concurrency N] [--threads-per-actor T] [--batch-size B] [--blocks N] \\
        [--distributed-sort] [--threshold name=value]

Reads the export's Parquet (``EXPORT/turns``, ``EXPORT/answers``: the layout of ``make
export``), runs the model in a callable class under ``map_batches`` (the version loads once
per actor; ``concurrency`` actors of ``--threads-per-actor`` torch threads each, and a GPU
share per actor only when the cluster has GPUs), and writes under OUT:

* ``scored/``: Parquet, one row per logged turn (emotion) or answer (difficulty), keyed to it,
  with the version scored and the served version's output beside it;
* ``report.json`` and ``report.md``: the comparison, each check against its threshold, the
  verdict (pass / fail), row counts and throughput.

``--measure-raw`` then times the same callable in this process on the same rows (no Ray),
with 1 and with all torch threads, and reports the job's rows/s over the faster of the two (the
issue asks for at least 0.8), the job's time by stage, and an end-to-end script in one process
(``pipelines.batch_throughput`` says what each figure counts and leaves out).
The per-model parts (the callable class, the comparison, the thresholds) are in
``pipelines/<model>/batch_score.py``; ``MODELS`` maps names to them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.dataset as pads
import yaml

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from pipelines.batch_throughput import markdown as throughput_markdown
from pipelines.batch_throughput import measure_raw, operator_stages, scoring_stage, throughput
from pipelines.common import REPO_ROOT, code_version, init_ray, setup_logging

log = logging.getLogger("pipelines.batch_score")

MODELS = {
    "emotion": "pipelines.emotion.batch_score",
    "difficulty": "pipelines.difficulty.batch_score",
}
# The deployment in serve_config.yaml whose user_config names each model's champion.
DEPLOYMENTS = {"emotion": "Emotion", "difficulty": "Difficulty"}


def model_job(name: str) -> ModuleType:
    return importlib.import_module(MODELS[name])


@dataclass(frozen=True)
class Check:
    """One gate: ``value`` compared with ``threshold`` by ``op`` (">=" or "<=")."""

    name: str
    value: float
    op: str
    threshold: float
    why: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None or not math.isfinite(self.value):
            return False  # a figure that could not be computed never passes
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def verdict(checks: list[Check]) -> str:
    return "pass" if checks and all(c.passed for c in checks) else "fail"


def champion(model: str, serve_config: Path) -> str:
    """The version ``serve_config.yaml`` serves to everyone not in a canary."""
    config = yaml.safe_load(Path(serve_config).read_text())
    for app in config.get("applications", []):
        for deployment in app.get("deployments", []):
            if deployment.get("name") == DEPLOYMENTS[model]:
                return str(deployment["user_config"]["model_version"])
    raise LookupError(f"{serve_config} names no {DEPLOYMENTS[model]} model_version")


def actor_options(resources: dict[str, float], *, concurrency: int, threads: int) -> dict:
    """``map_batches`` options: ``concurrency`` actors of ``threads`` CPUs each, and a share of
    the cluster's GPUs per actor only when it has any (at most one GPU each). (Ray 2.51+ takes
    the actor count as ``compute=ActorPoolStrategy(size=...)``; ``concurrency=`` is deprecated.)
    """
    from ray.data import ActorPoolStrategy

    options: dict[str, Any] = {
        "compute": ActorPoolStrategy(size=concurrency),
        "num_cpus": threads,
    }
    gpus = float(resources.get("GPU", 0))
    if gpus > 0:
        options["num_gpus"] = min(1.0, gpus / concurrency)
    return options


def default_concurrency(resources: dict[str, float], threads: int) -> int:
    """One actor per ``threads`` CPUs, keeping one CPU for reading, sorting and writing."""
    return max(1, int(resources.get("CPU", 1) - 1) // threads)


def parse_thresholds(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--threshold wants name=value, got {pair!r}")
        out[name] = float(value)
    return out


def run_job(args: argparse.Namespace, job: ModuleType, scorer_kwargs: dict) -> dict[str, Any]:
    """The Ray Data job, timed from the read to the last Parquet file written, with where the
    time went (``batch_throughput.operator_stages``)."""
    import ray
    from ray.data import SaveMode

    resources = ray.cluster_resources()
    threads = args.threads_per_actor
    concurrency = args.concurrency or default_concurrency(resources, threads)
    options = actor_options(resources, concurrency=concurrency, threads=threads)
    batch_size = job.batch_size(args.batch_size)
    blocks = job.blocks(args.blocks, concurrency)
    started = time.perf_counter()
    dataset, notes = job.dataset(args.export, blocks=blocks, distributed_sort=args.distributed_sort)
    ready_s = time.perf_counter() - started  # the driver's part (a lazy dataset: ~0)
    scored = dataset.map_batches(
        job.Scorer,
        fn_constructor_kwargs={**scorer_kwargs, "threads": threads},
        batch_size=batch_size,  # difficulty: None, whole blocks of whole learners
        batch_format="pandas",
        **options,
    )
    # Overwrite: a re-run's rows must not sit beside the last run's.
    scored.write_parquet(str(args.out / "scored"), mode=SaveMode.OVERWRITE)
    seconds = time.perf_counter() - started
    stages = operator_stages(scored.get_stats_summary(), started)
    return {
        "seconds": seconds,
        "concurrency": concurrency,  # actors
        "threads_per_actor": threads,
        "batch_size": batch_size,
        "blocks": blocks,
        "num_gpus_per_actor": options.get("num_gpus", 0),
        "cluster": {k: v for k, v in resources.items() if k in ("CPU", "GPU")},
        "input": notes,
        "stages": stages,
        "scoring_stage": scoring_stage(stages, job.Scorer.__name__, ready_s),
    }


def report(args: argparse.Namespace, job: ModuleType, version: str, served: str) -> dict:
    scored = pads.dataset(args.out / "scored", format="parquet").to_table().to_pandas()
    input_rows = job.input_rows(args.export)
    job.validate(scored, input_rows)  # one row per logged row, keyed to it: else no report
    comparison = job.compare(scored)
    thresholds = job.Thresholds(**parse_thresholds(args.threshold))
    checks = job.checks(comparison, thresholds, rows=len(scored))
    return {
        "model": args.model,
        "version": version,
        "champion": served,
        "export": str(args.export),
        "scored": str(args.out / "scored"),
        "rows": {"input": input_rows, "scored": len(scored)},
        "comparison": comparison,
        "thresholds": asdict(thresholds),
        "checks": [c.as_dict() for c in checks],
        "verdict": verdict(checks),
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def markdown(result: dict, job: ModuleType) -> str:
    lines = [
        f"# Batch scoring: {result['model']} {result['version']} vs served "
        f"(champion {result['champion']})",
        "",
        f"**Verdict: {result['verdict'].upper()}** ({result['created_at']}, code "
        f"{result['code_version']}); rows: {result['rows']['input']} in, "
        f"{result['rows']['scored']} scored.",
        "",
        "| check | value | threshold | passed | why this threshold |",
        "|---|---|---|---|---|",
    ]
    for c in result["checks"]:
        lines.append(
            f"| {c['name']} | {c['value']:.4f} | {c['op']} {c['threshold']:.4f} | "
            f"{'yes' if c['passed'] else 'NO'} | {c['why']} |"
        )
    lines += ["", *job.markdown(result["comparison"]), ""]
    lines += throughput_markdown(result["throughput"])
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    job = model_job(args.model)
    registry = ModelRegistry(args.registry)
    version = registry.resolve_version(args.model, args.version)
    served = champion(args.model, args.serve_config)
    scorer_kwargs = job.scorer_kwargs(str(args.registry), version, served)
    args.out.mkdir(parents=True, exist_ok=True)
    # The private local Ray gets one CPU per core (one actor each) plus one for reading,
    # sorting and writing; under `ray job submit` the job's cluster as it is.
    init_ray(os.cpu_count() or 1, env={"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    job_run = run_job(args, job, scorer_kwargs)
    result = report(args, job, version, served)
    raw = measure_raw(args.export, job, scorer_kwargs, args.out) if args.measure_raw else None
    result["throughput"] = throughput(job_run, raw, result["rows"]["scored"])
    (args.out / "report.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.out / "report.md").write_text(markdown(result, job))
    log.info("verdict %s; %s", result["verdict"], args.out / "report.md")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--version", required=True, help="a registered version, or latest")
    parser.add_argument("--export", type=Path, required=True, help="the export's root folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--serve-config", type=Path, default=REPO_ROOT / "serve_config.yaml")
    parser.add_argument("--concurrency", type=int, default=0, help="actors; 0: one per core")
    parser.add_argument("--threads-per-actor", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=0, help="0: the model's default")
    parser.add_argument("--blocks", type=int, default=0, help="0: the model's default per actor")
    parser.add_argument(
        "--distributed-sort",
        action="store_true",
        help="difficulty: group learners with Ray Data's distributed sort, not on the driver "
        "(for exports too big for the driver's memory; automatic beyond 5M rows)",
    )
    parser.add_argument("--measure-raw", action="store_true")
    parser.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--fail-on-verdict", action="store_true", help="exit 2 when the verdict is fail"
    )
    args = parser.parse_args(argv)
    args.export, args.out = args.export.resolve(), args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        result = run(args)
    except Exception:
        log.exception("batch scoring failed")
        return 1
    # The job succeeded whatever the verdict; with --fail-on-verdict a failed gate exits 2.
    return 2 if args.fail_on_verdict and result["verdict"] != "pass" else 0


if __name__ == "__main__":
    sys.exit(main())
