"""Unit tests for the emotion model: mappings, metrics, calibration, head/adapter I/O and every
shipped artifact (v1: frozen encoder + head; v2: LoRA adapter + head + temperature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.common.calibration import bce_at_temperature, fit_temperature
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.common.vocab import GOEMOTIONS_LABELS, LEARNING_STATES
from models.emotion.artifact import ADAPTER_FILE, load_head, save_artifact, save_v2_artifact
from models.emotion.classifier import EmotionClassifier, EmotionPrediction
from models.emotion.learning_states import (
    EKMAN_GROUPS,
    EKMAN_LABELS,
    STATE_WEIGHTS,
    state_matrix,
    states_from_scores,
)
from models.emotion.metrics import (
    THRESHOLD_GRID,
    ekman_scores,
    ekman_targets,
    evaluate_scores,
    expected_calibration_error,
    f1_per_label,
    tune_thresholds,
)
from models.emotion.model import (
    EmotionHead,
    EmotionHeadConfig,
    EmotionModel,
    EmotionModelConfig,
    LoraSettings,
)
from models.emotion.scorers import model_logits, sigmoid
from pipelines.common import shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = shared_data_dir()
GOEMOTIONS_DIR = DATA_DIR / "goemotions"
REGISTRY = ModelRegistry(DEFAULT_REGISTRY_ROOT)
# v1 (head only) is under 1 MB; v2 adds the LoRA adapter (r=16: ~2.7 MB in float32).
ARTIFACT_MAX_BYTES = 5_000_000
VERSIONS = REGISTRY.versions("emotion")
# The versions the README's figures come from; a missing one is a failure, not a skip.
SHIPPED_VERSIONS = ("v1", "v2", "v3", "v4", "v5")
TESTED_VERSIONS = list(dict.fromkeys([*SHIPPED_VERSIONS, *VERSIONS]))  # and any registered later


# -- mappings -------------------------------------------------------------------------------


def test_state_mapping_covers_every_label_and_every_state() -> None:
    assert tuple(STATE_WEIGHTS) == LEARNING_STATES
    mapped = {label for weights in STATE_WEIGHTS.values() for label in weights}
    assert mapped == set(GOEMOTIONS_LABELS)
    matrix = state_matrix()
    assert matrix.shape == (28, 8)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert (matrix >= 0).all()
    assert (matrix.sum(axis=0) > 0).all(), "every state receives some label"


def test_ekman_groups_partition_the_labels_in_dataset_order() -> None:
    assert EKMAN_LABELS == ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
    members = [label for group in EKMAN_GROUPS.values() for label in group]
    assert sorted(members) == sorted(GOEMOTIONS_LABELS)
    assert len(members) == len(set(members))


def test_states_from_scores_is_a_distribution() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((50, 28))
    states = states_from_scores(scores)
    assert states.shape == (50, 8)
    assert (states >= 0).all()
    np.testing.assert_allclose(states.sum(axis=1), 1.0)


def test_states_from_scores_edge_cases() -> None:
    zeros = states_from_scores(np.zeros((2, 28)))
    neutral = LEARNING_STATES.index("neutral")
    np.testing.assert_array_equal(zeros[:, neutral], 1.0)
    only_confusion = np.zeros((1, 28))
    only_confusion[0, GOEMOTIONS_LABELS.index("confusion")] = 0.9
    assert LEARNING_STATES[int(states_from_scores(only_confusion).argmax())] == "confused"
    only_surprise = np.zeros((1, 28))
    only_surprise[0, GOEMOTIONS_LABELS.index("surprise")] = 0.8
    split = states_from_scores(only_surprise)[0]
    assert split[LEARNING_STATES.index("curious")] == pytest.approx(0.5)
    assert split[LEARNING_STATES.index("breakthrough")] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        states_from_scores(np.zeros((1, 7)))


# -- metrics --------------------------------------------------------------------------------


def test_f1_per_label_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    targets = rng.random((300, 28)) < 0.1
    predicted = rng.random((300, 28)) < 0.15
    ours = f1_per_label(predicted, targets)
    theirs = f1_score(targets, predicted, average=None, zero_division=0)
    np.testing.assert_allclose(ours, theirs)


def test_tune_thresholds_finds_the_separating_threshold() -> None:
    rng = np.random.default_rng(2)
    targets = rng.random((400, 3)) < 0.3
    # Positives score in [0.62, 1), negatives in [0, 0.58): any grid step in between is perfect.
    scores = np.where(targets, 0.62 + 0.38 * rng.random((400, 3)), 0.58 * rng.random((400, 3)))
    thresholds = tune_thresholds(scores, targets)
    assert set(thresholds) <= set(THRESHOLD_GRID)
    np.testing.assert_allclose(f1_per_label(scores >= thresholds, targets), 1.0)


def test_ekman_grouping_of_scores_and_targets() -> None:
    scores = np.zeros((1, 28))
    scores[0, GOEMOTIONS_LABELS.index("annoyance")] = 0.7
    scores[0, GOEMOTIONS_LABELS.index("anger")] = 0.2
    grouped = ekman_scores(scores)
    assert grouped.shape == (1, 7)
    assert grouped[0, EKMAN_LABELS.index("anger")] == pytest.approx(0.7)
    targets = np.zeros((1, 28), dtype=bool)
    targets[0, GOEMOTIONS_LABELS.index("relief")] = True
    assert ekman_targets(targets)[0].tolist() == [label == "joy" for label in EKMAN_LABELS]
    report = evaluate_scores(scores, targets, np.full(28, 0.5), np.full(7, 0.5))
    assert set(report["per_label_f1"]) == set(GOEMOTIONS_LABELS)
    assert 0.0 <= report["ekman_macro_f1"] <= 1.0


# -- calibration ----------------------------------------------------------------------------


def test_expected_calibration_error() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((20000, 4))
    calibrated = rng.random((20000, 4)) < p
    assert expected_calibration_error(p, calibrated) < 0.01
    # Always 0.9 where the positive rate is 0.5: a gap of 0.4 everywhere.
    assert expected_calibration_error(
        np.full((1000, 2), 0.9), np.arange(2000).reshape(1000, 2) % 2 == 0
    ) == (pytest.approx(0.4))
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([[True, False]])) == 0.0


def test_fit_temperature_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 4.0, (20000, 3))
    targets = rng.random((20000, 3)) < sigmoid(logits / 2.5)  # overconfident logits: T = 2.5
    t = fit_temperature(logits, targets)
    assert t == pytest.approx(2.5, rel=0.05)
    assert bce_at_temperature(logits, targets, t) < bce_at_temperature(logits, targets, 1.0)
    assert expected_calibration_error(sigmoid(logits / t), targets) < expected_calibration_error(
        sigmoid(logits), targets
    )


# -- head and artifact I/O ------------------------------------------------------------------


@pytest.mark.parametrize("hidden_dim", [0, 16])
def test_head_forward_and_save_load_roundtrip(tmp_path: Path, hidden_dim: int) -> None:
    torch.manual_seed(0)
    head = EmotionHead(EmotionHeadConfig(hidden_dim=hidden_dim)).eval()
    x = torch.randn(5, 384)
    logits, loss = head(x)
    assert logits.shape == (5, 28) and loss is None
    _, loss = head(x, torch.zeros(5, 28))
    assert loss is not None and loss.ndim == 0 and float(loss.detach()) > 0
    files = save_artifact(tmp_path, head, np.full(28, 0.3), np.full(7, 0.4))
    assert sorted(p.name for p in files) == ["head.pt", "thresholds.json"]
    loaded = load_head(tmp_path)
    assert loaded.config == head.config
    torch.testing.assert_close(loaded(x)[0], logits)


SMALL_LORA = EmotionModelConfig(lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_length=64)


@pytest.fixture(scope="module")
def trained_like_v2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmotionModel]:
    """A v2 artifact with random (non-zero) LoRA weights, head, thresholds and temperature."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = EmotionModel(SMALL_LORA).eval()
    with torch.no_grad():
        for name, p in model.encoder.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.05)  # lora_B starts at 0: make the adapter change something
    directory = tmp_path_factory.mktemp("emotion_v2")
    thresholds = np.linspace(0.1, 0.9, 28)
    save_v2_artifact(
        directory, model.config, model.adapter_state(), model.head, thresholds,
        np.full(7, 0.4), temperature=1.7,
    )  # fmt: skip
    return directory, model


def test_emotion_model_forward_and_trainable_parameters() -> None:
    torch.manual_seed(1)
    model = EmotionModel(SMALL_LORA)
    lora, head = model.trainable_parameters()
    assert lora and all(p.requires_grad for p in lora)
    frozen = [p for n, p in model.encoder.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    ids = torch.tensor([[101, 2023, 2003, 2307, 102], [101, 7592, 102, 0, 0]])
    mask = (ids != 0).long()
    logits, loss = model(ids, mask)
    assert logits.shape == (2, 28) and loss is None
    _, loss = model(ids, mask, torch.zeros(2, 28))
    loss.backward()
    assert all(p.grad is not None for p in lora + head)


def test_v2_artifact_roundtrip_merged(trained_like_v2: tuple[Path, EmotionModel]) -> None:
    directory, model = trained_like_v2
    assert {p.name for p in directory.iterdir()} == {ADAPTER_FILE, "head.pt", "thresholds.json"}
    clf = EmotionClassifier.from_artifact(directory)
    assert clf.artifact_format == 2 and clf.temperature == pytest.approx(1.7)
    assert clf.scorer.model.merged
    from models.emotion.encoder import load_tokenizer

    expected = model_logits(model, load_tokenizer(), TEXTS, max_length=64)  # unmerged LoRA
    np.testing.assert_allclose(clf.predict_logits(TEXTS), expected, atol=1e-4)
    np.testing.assert_allclose(clf.predict_scores(TEXTS), sigmoid(expected / 1.7), atol=1e-4)
    predictions = clf.predict(TEXTS)
    for text, together in zip(TEXTS, predictions, strict=True):
        (alone,) = clf.predict([text])
        assert alone.predicted == together.predicted
        for label in GOEMOTIONS_LABELS:
            assert alone.scores[label] == pytest.approx(together.scores[label], abs=1e-5)
        assert all(0.0 <= v <= 1.0 for v in together.scores.values())
        assert together.predicted == [
            lb for lb, t in zip(GOEMOTIONS_LABELS, clf.thresholds, strict=True)
            if together.scores[lb] >= t
        ]  # fmt: skip


# -- the shipped artifacts ------------------------------------------------------------------


def test_every_shipped_version_is_registered() -> None:
    assert set(SHIPPED_VERSIONS) <= set(VERSIONS), f"models/artifacts/emotion holds {VERSIONS}"


@pytest.fixture(scope="module", params=TESTED_VERSIONS)
def classifier(request: pytest.FixtureRequest) -> EmotionClassifier:
    torch.set_num_threads(2)
    return EmotionClassifier.from_artifact(REGISTRY.load("emotion", request.param).path)


TEXTS = [
    "I don't get it at all, why is the answer 12?",
    "Oh wow, now I finally understand how recursion works!",
    "This is so annoying, I've tried five times and it still fails.",
    "ok",
    "I'm worried I'll fail the exam tomorrow, I haven't studied enough.",
    "Thank you so much, that explanation was really helpful :)",
    "",
    "What would happen if the list were empty? " * 20,  # longer than max_length tokens
]


@pytest.mark.parametrize("version", TESTED_VERSIONS)
def test_shipped_artifact_is_small_and_complete(version: str) -> None:
    artifact = REGISTRY.load("emotion", version)
    files = {p.name: p.stat().st_size for p in artifact.path.iterdir() if p.is_file()}
    assert {"head.pt", "thresholds.json", "metadata.json"} <= set(files)
    assert sum(files.values()) < ARTIFACT_MAX_BYTES, files
    metrics = artifact.metadata.metrics
    for key in ("test_macro_f1", "test_ekman_macro_f1", "dev_macro_f1", "test_micro_f1"):
        assert 0.0 < metrics[key] < 1.0
    if ADAPTER_FILE in files:  # v2: calibrated on dev
        assert metrics["temperature"] > 0
        assert 0.0 <= metrics["test_ece_after"] < 1.0


def test_predict_returns_valid_fields(classifier: EmotionClassifier) -> None:
    predictions = classifier.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    assert classifier.predict([]) == []
    for p in predictions:
        assert isinstance(p, EmotionPrediction)
        assert p.state in LEARNING_STATES
        assert set(p.states) == set(LEARNING_STATES)
        assert sum(p.states.values()) == pytest.approx(1.0, abs=1e-6)
        assert p.confidence == pytest.approx(max(p.states.values()))
        assert p.states[p.state] == pytest.approx(p.confidence)
        assert set(p.scores) == set(GOEMOTIONS_LABELS)
        assert all(0.0 <= v <= 1.0 for v in p.scores.values())
        assert set(p.predicted) <= set(GOEMOTIONS_LABELS)
        for label in p.predicted:
            threshold = classifier.thresholds[GOEMOTIONS_LABELS.index(label)]
            assert p.scores[label] >= threshold


def test_batched_and_single_predictions_agree(classifier: EmotionClassifier) -> None:
    batched = classifier.predict(TEXTS)
    for text, together in zip(TEXTS, batched, strict=True):
        (alone,) = classifier.predict([text])
        assert alone.state == together.state
        assert alone.predicted == together.predicted
        for label in GOEMOTIONS_LABELS:
            assert alone.scores[label] == pytest.approx(together.scores[label], abs=1e-5)
        for state in LEARNING_STATES:
            assert alone.states[state] == pytest.approx(together.states[state], abs=1e-5)


def test_plausible_states_on_obvious_texts(classifier: EmotionClassifier) -> None:
    expected = {
        "I am so confused, I have no idea what this means.": ("confused", "confusion"),
        "I am scared of failing the test.": ("anxious", "fear"),
        "Thank you so much, that explanation was really helpful :)": ("engaged", "gratitude"),
        "Ugh, this stupid thing is wrong again!": ("frustrated", "annoyance"),
        "ok": ("neutral", "neutral"),
    }
    predictions = classifier.predict(list(expected))
    for (text, (state, label)), p in zip(expected.items(), predictions, strict=True):
        assert (p.state, label in p.predicted) == (state, True), (text, p.state, p.predicted)


# -- against the dataset (skips without ../shared/data) -------------------------------------

needs_data = pytest.mark.skipif(
    not (GOEMOTIONS_DIR / "original" / "test.tsv").is_file(),
    reason=f"GoEmotions data not found at {GOEMOTIONS_DIR} (set TUTOR_DATA_DIR to its parent)",
)


@pytest.mark.data
@needs_data
def test_ekman_grouping_matches_the_datasets_ekman_files() -> None:
    from pipelines.emotion.evaluate import check_ekman_files
    from pipelines.emotion.goemotions import read_split

    _, targets = read_split(GOEMOTIONS_DIR, "dev")
    check = check_ekman_files(GOEMOTIONS_DIR, "dev", targets)
    assert check == {"checked": True, "labels_order_matches": True, "rows_mismatched": 0}


@pytest.mark.data
@needs_data
@pytest.mark.parametrize("version", TESTED_VERSIONS)
def test_evaluate_reproduces_the_registered_fingerprint(tmp_path: Path, version: str) -> None:
    from pipelines.emotion.evaluate import main
    from pipelines.emotion.goemotions import FINGERPRINT_ROWS

    out = tmp_path / "report.json"
    report = main(
        ["--data", str(GOEMOTIONS_DIR), "--limit", str(FINGERPRINT_ROWS), "--out", str(out),
         "--version", version]
    )  # fmt: skip
    assert out.is_file()
    assert report["n"] == FINGERPRINT_ROWS
    assert report["registered_reference"], "metadata lacks the test_first200 fingerprint"
    assert report["reproduces_registered"] is True, (
        report["metrics"]["macro_f1"],
        report["registered_reference"],
    )
