"""Fit the stacked ensemble over registered difficulty versions and register it.

    python -m pipelines.difficulty.stack_fit --members v1 v2 v3 [--data ../shared/data/kt]
        [--no-register | --allow-dirty]

The members are registered versions trained on the same dataset and fold (their metadata says
which). Each predicts that fold's valid and test splits leak-free, in the harness's canonical
order and with the harness's protocol (``pipelines.difficulty.evaluate.predict_rows`` for the
networks, the served trace for the LR tracer, which equals its fit's predictions);
``pipelines.difficulty.stacking.fit_predict_stack`` fits the stack on valid and measures test,
exactly as ``make cv-difficulty-v3`` does per fold.
The served ``StackedTracer`` is checked to combine its members' probabilities the way the
fitted regression does, then saved with copies of its members and registered with the test
metrics. Runs in this process (a few logistic regressions and three members' inference).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.common.calibration import reliability
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.difficulty.data import StudentSequence, load_split
from models.difficulty.loader import load_tracer
from models.difficulty.lr_tracer import LRTracer
from models.difficulty.stack_tracer import StackedTracer
from models.difficulty.tracer import KnowledgeTracer
from pipelines.common import committed_code_version, setup_logging
from pipelines.difficulty.evaluate import (
    DEFAULT_DATA_DIR,
    MODEL_NAME,
    binary_metrics,
    predict_rows,
    temperature_report,
)
from pipelines.difficulty.fold_predictions import (
    FoldPredictions,
    SplitPredictions,
    canonical_history_len,
    canonical_labels,
)
from pipelines.difficulty.lr_evaluate import served_probabilities as lr_served_probabilities
from pipelines.difficulty.stacking import fit_predict_stack

log = logging.getLogger("pipelines.difficulty.stack_fit")
# Tolerance of the served combination against the fitted regression (float64 both ways).
COMBINE_TOLERANCE = 1e-9


def member_probabilities(tracer: Any, split: Sequence[StudentSequence]) -> np.ndarray:
    """The member's leak-free P(correct) for every row of ``split`` in canonical order, by the
    harness's protocol for its kind."""
    if isinstance(tracer, LRTracer):
        return lr_served_probabilities(tracer, split)
    if isinstance(tracer, KnowledgeTracer):
        return predict_rows(
            tracer.model, tracer.vocab, tracer.priors, split, window=tracer.max_history
        )[1]
    raise TypeError(f"a stack member must be a network or the LR tracer, not {type(tracer)}")


def stack_probabilities(stack: StackedTracer, split: Sequence[StudentSequence]) -> np.ndarray:
    """The stack's leak-free P(correct) for every row of ``split`` in canonical order: its
    members' (by the harness's protocol) combined with each row's history length; an unseen
    skill's prior passes through, as served."""
    members = [member_probabilities(m, split) for m in stack.members.values()]
    history_len = canonical_history_len(split)
    prior = np.array(
        [np.nan if stack.vocab.has_skill(s) else stack.priors.for_skill(s)
         for seq in split for s in seq.skill_ids]
    )  # fmt: skip
    probs = np.array(
        [stack.combine([m[r] for m in members], int(n)) for r, n in enumerate(history_len)]
    )
    return np.where(np.isnan(prior), probs, prior)


def evaluate_stack(
    stack: StackedTracer, valid: Sequence[StudentSequence], test: Sequence[StudentSequence]
) -> dict[str, Any]:
    """``pipelines.difficulty.evaluate``'s metrics for a stack: the same keys; its temperature
    is 1 (its own fit on valid is its calibration), so both ECE figures are the served one."""
    labels = canonical_labels(test)
    probs = stack_probabilities(stack, test)
    calibration = reliability(probs, labels)
    skill_prior = np.array([stack.priors.for_skill(s) for seq in test for s in seq.skill_ids])
    del valid  # nothing to fit: the stack was calibrated on valid when it was fitted
    return {
        "protocol": "leak_free_attempt",
        **binary_metrics(labels, probs),
        "calibration": calibration,
        "students": len(test),
        "unseen_skill_rows": int(
            sum(not stack.vocab.has_skill(s) for q in test for s in q.skill_ids)
        ),
        "unseen_item_rows": int(sum(not stack.vocab.has_item(i) for q in test for i in q.item_ids)),
        "skill_prior_auc": binary_metrics(labels, skill_prior)["auc"],
        # No temperature: the stack's own fit on valid is its calibration.
        "temperature": temperature_report(
            1.0, 1.0, 1.0, "the stack's fit on valid (no temperature)", calibration, calibration
        ),
    }


def member_name(architecture: str, taken: set[str]) -> str:
    """The member's name in the stack: its architecture, numbered if two share one."""
    name, n = architecture, 2
    while name in taken:
        name, n = f"{architecture}{n}", n + 1
    return name


def fit_stack(
    registry: ModelRegistry, versions: Sequence[str], data_dir: Path | str
) -> tuple[StackedTracer, FoldPredictions, dict[str, Any]]:
    """The stack over ``versions`` (fitted on their fold's valid split), its fold predictions
    and its run config."""
    artifacts = [registry.load(MODEL_NAME, v) for v in versions]
    folds = {(a.metadata.config.get("dataset"), a.metadata.config.get("fold")) for a in artifacts}
    if len(folds) != 1:
        raise ValueError(f"members trained on different datasets or folds: {sorted(folds)}")
    ((dataset, fold),) = folds
    splits = {s: load_split(data_dir, dataset, s, int(fold)) for s in ("valid", "test")}
    members: dict[str, Any] = {}
    bases: dict[str, FoldPredictions] = {}
    for artifact in artifacts:
        tracer = load_tracer(artifact.path)
        name = member_name(tracer.architecture, set(members))
        members[name] = tracer
        probs = {s: member_probabilities(tracer, split) for s, split in splits.items()}
        bases[name] = FoldPredictions(
            valid=SplitPredictions.for_split(splits["valid"], probs["valid"]),
            test=SplitPredictions.for_split(splits["test"], probs["test"]),
            metrics={"version": artifact.metadata.version},
        )
        log.info("member %s (%s): predicted valid and test", name, artifact.metadata.version)
    fitted = fit_predict_stack(bases)
    coef = fitted.metrics["coefficients"]
    interactions = bool(fitted.metrics["interactions"])
    stack = StackedTracer(
        members,
        member_coef=[coef[f"logit_{n}"] for n in members],
        history_coef=coef["log1p_history"],
        intercept=fitted.metrics["intercept"],
        interaction_coef=[coef[f"logit_{n}*log1p_history"] for n in members]
        if interactions
        else None,
        fitted_on={"dataset": dataset, "fold": int(fold), "split": "valid"},
    )
    check_combination(stack, bases, fitted)
    config = {
        "model": "stack",
        "members": {n: a.metadata.version for n, a in zip(members, artifacts, strict=True)},
        "dataset": dataset,
        "fold": int(fold),
        "interactions": interactions,
        "max_history": stack.max_history,
    }
    return stack, fitted, config


def check_combination(
    stack: StackedTracer, bases: dict[str, FoldPredictions], fitted: FoldPredictions
) -> None:
    """The served ``combine`` gives the fitted regression's test probabilities (on a sample of
    rows): what is registered is what was measured."""
    rows = np.linspace(0, len(fitted.test) - 1, num=min(500, len(fitted.test)), dtype=int)
    served = np.array(
        [
            stack.combine(
                [b.test.probs[r] for b in bases.values()], int(fitted.test.history_len[r])
            )
            for r in rows
        ]
    )
    worst = float(np.max(np.abs(served - fitted.test.probs[rows])))
    if worst > COMBINE_TOLERANCE:
        raise AssertionError(f"served stack differs from the fitted one by {worst:.2e}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", nargs="+", required=True, help="registered versions")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--no-register", action="store_true")
    parser.add_argument("--allow-dirty", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    version = None if args.no_register else committed_code_version(allow_dirty=args.allow_dirty)
    registry = ModelRegistry(args.registry)
    stack, fitted, config = fit_stack(registry, args.members, args.data)
    metrics = fitted.metrics
    log.info(
        "stack of %s: test AUC %.4f, ECE %.4f (interactions: %s)",
        config["members"],
        metrics["test_auc"],
        metrics["test_ece"],
        config["interactions"],
    )
    result: dict[str, Any] = {"metrics": metrics, "config": config}
    if args.no_register:
        return result
    with tempfile.TemporaryDirectory() as tmp:
        stack.save(tmp)
        meta = registry.register(
            MODEL_NAME,
            tmp,
            dataset=f"{config['dataset']} fold {config['fold']}",
            code_version=version,
            metrics=metrics,
            config=config,
        )
    log.info("registered %s %s", MODEL_NAME, meta.version)
    result["version"] = meta.version
    return result


if __name__ == "__main__":
    main()
