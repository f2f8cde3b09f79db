"""The emotion pipelines' command lines: the served recipe, registration guards, the int8 rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pipelines.common
from pipelines.common import DirtyTreeError
from pipelines.emotion import (
    calibrate_states,
    compare_int8,
    quantize,
    train,
    train_state_head,
    train_worker,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVED = REPO_ROOT / "models" / "artifacts" / "emotion" / "v2" / "metadata.json"
INT8_REPORT = REPO_ROOT / "reports" / "emotion_v3_int8.json"


def test_train_defaults_are_the_served_recipe() -> None:
    """``make train-emotion`` (no flags) trains with every hyperparameter v2 was trained with."""
    recorded = json.loads(SERVED.read_text())["config"]
    defaults = vars(train.parse_args([]))
    assert set(train.RECIPE) <= set(recorded)
    for key in train.RECIPE:
        assert defaults[key] == recorded[key], key
    assert (defaults["limit_train"], defaults["limit_eval"]) == (
        recorded["limit_train"],
        recorded["limit_eval"],
    )
    model = recorded["model"]
    config = train_worker.model_config(train.loop_config_from(train.parse_args([])))
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (
        model["lora"]["r"],
        model["lora"]["alpha"],
        model["lora"]["dropout"],
    )
    assert config.lora.target_modules == model["lora"]["target_modules"]
    assert config.head.dropout == model["head"]["dropout"]
    assert config.max_length == model["max_length"]


REGISTERING = [
    pytest.param(train.main, ["--data", "/nonexistent"], id="train"),
    pytest.param(calibrate_states.main, ["--version", "v2"], id="calibrate_states"),
    pytest.param(train_state_head.main, ["--version", "v3"], id="train_state_head"),
    pytest.param(quantize.main, ["--version", "v4"], id="quantize"),
]


@pytest.mark.parametrize(("main", "argv"), REGISTERING)
def test_registering_refuses_a_dirty_tree_before_any_work(
    main, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelines.common, "code_version", lambda: "abc1234-dirty")
    with pytest.raises(DirtyTreeError):
        main(argv)


def test_train_checks_the_tree_only_when_it_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines.common, "code_version", lambda: "abc1234-dirty")
    # Past the check, the next step finds no data: proof that the check let the run through.
    for flag in ("--no-register", "--allow-dirty"):
        with pytest.raises(SystemExit, match="no GoEmotions data"):
            train.main(["--data", "/nonexistent", flag])


def test_int8_rule_needs_both_macro_f1_drops_under_0_01() -> None:
    base = {"macro_f1": 0.53, "ekman_macro_f1": 0.648}
    small = compare_int8.int8_decision(base, {"macro_f1": 0.525, "ekman_macro_f1": 0.641})
    assert small["keep_int8"] is True and small["failed"] == []
    ekman = compare_int8.int8_decision(base, {"macro_f1": 0.521, "ekman_macro_f1": 0.629})
    assert ekman["keep_int8"] is False
    assert [f.split()[0] for f in ekman["failed"]] == ["ekman_macro_f1_drop"]
    exactly = compare_int8.int8_decision(base, {"macro_f1": 0.52, "ekman_macro_f1": 0.648})
    assert exactly["failed"] == ["macro_f1_drop 0.01 >= 0.01"]


def test_committed_int8_report_follows_the_rule() -> None:
    assert INT8_REPORT.is_file(), "run python -m pipelines.emotion.compare_int8 --version v3"
    report = json.loads(INT8_REPORT.read_text())
    decision = compare_int8.int8_decision(report["float32"], report["int8_dynamic"])
    assert {k: report[k] for k in decision} == decision
