"""The command line itself: arguments, exit codes and one-line errors (typer's CliRunner)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from deployments.cli import serve_client
from deployments.cli.main import app
from models.common.registry import ModelRegistry
from tests.unit.cli.conftest import SERVED_EMOTION

runner = CliRunner()


@pytest.fixture(autouse=True)
def _store(monkeypatch, store_uri):
    monkeypatch.setenv("TUTOR_STORE_URI", store_uri)


def _never_connect(address):
    raise AssertionError("a refused command must not reach Serve")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "sentiment", "v1"], "unknown model 'sentiment'"),
        (["promote", "emotion", "v9"], "no version 'v9'"),
        (["canary", "emotion", "v3", "--percent", "150"], "below 100"),
        (["canary", "emotion", SERVED_EMOTION, "--percent", "10"], "is the champion"),
        (["shadow", "emotion", "--stop"], "no shadow running"),
        (["rollback", "difficulty"], "no champion before v5"),
    ],
)
def test_refusals_exit_2_with_one_line_and_change_nothing(monkeypatch, config_path, args, message):
    monkeypatch.setattr(serve_client, "connect", _never_connect)
    original = config_path.read_bytes()
    result = runner.invoke(app, ["models", *args, "--config", str(config_path)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert config_path.read_bytes() == original


@pytest.mark.parametrize(
    "args",
    [
        ["canary", "emotion", "v3"],  # --percent is required
        ["canary", "emotion", "v3", "--percent", "half"],
        ["promote", "emotion"],  # no version
        ["shadow", "emotion"],  # neither a version nor --stop
        ["shadow", "emotion", "v3", "--stop"],
        ["frobnicate"],
    ],
)
def test_argument_errors_exit_2(config_path, args):
    result = runner.invoke(app, ["models", *args, "--config", str(config_path)])
    assert result.exit_code == 2, result.output


def test_list_json(config_path):
    result = runner.invoke(
        app, ["models", "list", "difficulty", "--config", str(config_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    (difficulty,) = json.loads(result.stdout)
    assert [v["version"] for v in difficulty["versions"]] == ModelRegistry().versions("difficulty")
    deployments = yaml.safe_load(config_path.read_text())["applications"][0]["deployments"]
    (served,) = [
        d["user_config"]["model_version"] for d in deployments if d["name"] == "Difficulty"
    ]
    roles = {v["version"]: v["roles"] for v in difficulty["versions"]}
    assert roles.pop(served) == ["champion"]
    assert all(r == [] for r in roles.values())


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["models", "list", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read" in result.stderr
