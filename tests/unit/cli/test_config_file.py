"""serve_config.yaml written back by `tutor`: comments, order and layout kept; only the
changed rollout keys differ."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from deployments.cli.config_file import ServeConfigFile
from deployments.cli.errors import RefusedError
from deployments.cli.plan import rollout_of
from deployments.config import config_deployments
from deployments.lifecycle.rollout import CanarySplit, ShadowRun
from tests.unit.cli.conftest import SERVED_EMOTION

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = [line[2:] for line in diff if line.startswith("- ")]
    added = [line[2:] for line in diff if line.startswith("+ ")]
    return removed, added


def _edit(path: Path, **changes) -> ServeConfigFile:
    config = ServeConfigFile.load(path)
    before = rollout_of(config.user_config("Emotion"))
    config.set_rollout("Emotion", before, before.model_copy(update=changes))
    return config


def test_an_unchanged_round_trip_is_byte_for_byte(config_path):
    assert ServeConfigFile.load(config_path).text() == config_path.read_text()


def test_a_canary_adds_its_keys_and_nothing_else_changes(config_path):
    original = config_path.read_text()
    config = _edit(config_path, canary=CanarySplit(version="v3", percent=50, started_at=T0))
    config.write()
    removed, added = _changed_lines(original, config_path.read_text())
    assert removed == []
    assert added == [
        "          canary:",
        "            version: v3",
        "            percent: 50",
        "            started_at: '2026-12-01T10:00:00Z'",
    ]
    # Every comment is still there, in order.
    comments = [line for line in original.splitlines() if line.strip().startswith("#")]
    kept = [line for line in config_path.read_text().splitlines() if line.strip().startswith("#")]
    assert kept == comments


def test_a_promotion_changes_one_line(config_path):
    original = config_path.read_text()
    _edit(config_path, model_version="v3").write()
    assert _changed_lines(original, config_path.read_text()) == (
        [f"          model_version: {SERVED_EMOTION}"],
        ["          model_version: v3"],
    )


def test_adding_then_removing_a_shadow_gives_the_original_back(config_path):
    original = config_path.read_text()
    _edit(config_path, shadow=ShadowRun(version="v2", started_at=T0)).write()
    assert config_path.read_text() != original
    _edit(config_path, shadow=None).write()
    assert config_path.read_text() == original


def test_serve_gets_what_the_file_will_say(config_path):
    config = _edit(config_path, canary=CanarySplit(version="v3", percent=12.5, started_at=T0))
    deployed = config.deploy_config()
    assert deployed == yaml.safe_load(config.text())
    emotion = config_deployments(deployed)["Emotion"]
    # A string, not a YAML timestamp: it goes to Serve as JSON and back into RolloutConfig.
    assert emotion["user_config"]["canary"] == {
        "version": "v3",
        "percent": 12.5,
        "started_at": "2026-12-01T10:00:00Z",
    }
    assert rollout_of(emotion["user_config"]).canary.started_at == T0


def test_a_pyyaml_dumped_config_round_trips_too(tmp_path, config_path):
    """The test harness writes configs with PyYAML (other indentation): also kept as is."""
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(yaml.safe_dump(yaml.safe_load(config_path.read_text()), sort_keys=False))
    assert ServeConfigFile.load(dumped).text() == dumped.read_text()


def test_a_file_that_is_not_a_serve_config_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a mapping\n")
    with pytest.raises(RefusedError, match="not a Serve config"):
        ServeConfigFile.load(bad)
    with pytest.raises(RefusedError, match="no deployment named Nope"):
        ServeConfigFile.load(Path(__file__).parents[3] / "serve_config.yaml").user_config("Nope")
