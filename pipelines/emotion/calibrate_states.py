"""Calibrate the eight-state `confidence` of a registered emotion version on learner text.

GoEmotions has no learning states, so the state distribution is calibrated where it is used:
a temperature on the distribution is fitted on the learner dev set, the expected calibration
error is measured on the held-out learner test set before and after, and the result is
registered as a new version (the source's files plus ``state_calibration.json``), so the served
version always names exactly what it does.

    python -m pipelines.emotion.calibrate_states --version v2 [--no-register] [--allow-dirty]

Registering needs a committed tree (``pipelines.common.committed_code_version``, checked before
any work); ``--allow-dirty`` registers under ``<sha>-dirty`` instead.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.common.vocab import LEARNING_STATES
from models.emotion.artifact import STATE_CALIBRATION_FILE
from models.emotion.classifier import EmotionClassifier
from models.emotion.learning_states import (
    calibrate_states,
    fit_state_temperature,
    state_nll,
    top_state_ece,
)
from pipelines.common import (
    REPO_ROOT,
    add_registration_flags,
    committed_code_version,
    setup_logging,
    use_offline_models,
)
from pipelines.emotion.evaluate_learning_states import read_set

logger = logging.getLogger("calibrate_emotion_states")
DATA = REPO_ROOT / "tests" / "data"


def _uncalibrated_states(
    classifier: EmotionClassifier, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    texts, gold = read_set(path)
    _, states = classifier.predict_states(texts)
    return states, np.array([LEARNING_STATES.index(g) for g in gold])


def calibration_report(states_dev, gold_dev, states_test, gold_test) -> dict:
    temperature = fit_state_temperature(states_dev, gold_dev)
    after = calibrate_states(states_test, temperature)
    return {
        "temperature": round(temperature, 4),
        "fitted_on": "tests/data/learner_messages_dev.jsonl (state NLL)",
        "dev_nll_before": round(state_nll(states_dev, gold_dev), 4),
        "dev_nll_after": round(state_nll(calibrate_states(states_dev, temperature), gold_dev), 4),
        "test_ece_before": round(top_state_ece(states_test, gold_test), 4),
        "test_ece_after": round(top_state_ece(after, gold_test), 4),
        "test_accuracy": round(float((after.argmax(1) == gold_test).mean()), 4),
        "test_mean_confidence_before": round(float(states_test.max(1).mean()), 4),
        "test_mean_confidence_after": round(float(after.max(1).mean()), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default="latest", help="source emotion version")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--dev-set", type=Path, default=DATA / "learner_messages_dev.jsonl")
    parser.add_argument("--test-set", type=Path, default=DATA / "learner_messages_test.jsonl")
    add_registration_flags(parser)
    args = parser.parse_args(argv)
    setup_logging()
    # Before any work: a run that could not be registered fails now.
    code_version = (
        None if args.no_register else committed_code_version(allow_dirty=args.allow_dirty)
    )
    use_offline_models(1)

    registry = ModelRegistry(args.registry)
    source = registry.load("emotion", args.version)
    if (source.path / STATE_CALIBRATION_FILE).is_file():
        raise SystemExit(f"emotion {source.metadata.version} is already state-calibrated")
    classifier = EmotionClassifier.from_artifact(source.path)
    report = calibration_report(
        *_uncalibrated_states(classifier, args.dev_set),
        *_uncalibrated_states(classifier, args.test_set),
    )
    logger.info("state calibration of emotion %s: %s", source.metadata.version, report)
    if code_version is None:
        return report
    metadata = registry.register_derived(
        source,
        lambda directory: (directory / STATE_CALIBRATION_FILE).write_text(
            json.dumps(report, indent=2) + "\n"
        ),
        dataset=source.metadata.dataset + " + learner messages (state calibration)",
        code_version=code_version,
        metrics={**source.metadata.metrics, "learner_state_calibration": report},
        config={**source.metadata.config, "state_calibrated_from": source.metadata.version},
    )
    logger.info(
        "registered emotion %s (%s + state calibration)", metadata.version, source.metadata.version
    )
    return {"version": metadata.version, **report}


if __name__ == "__main__":
    main()
