"""The personalization version's policy.json: written, read back, and refused when malformed."""

import json

import pytest

from models.personalization.bandit import ThompsonConfig
from models.personalization.policy_version import POLICY_FILE, PolicyVersion

SERVED = PolicyVersion(statistics="lin_ts_v1", exploration=0.5, prior_precision=1.0)


def test_a_saved_policy_loads_back_equal(tmp_path):
    path = SERVED.save(tmp_path)
    assert path == tmp_path / POLICY_FILE
    assert json.loads(path.read_text()) == {
        "statistics": "lin_ts_v1",
        "exploration": 0.5,
        "prior_precision": 1.0,
    }
    assert PolicyVersion.from_artifact(tmp_path) == SERVED


def test_the_bandit_config_takes_the_version_and_the_serving_tunables():
    config = PolicyVersion("lin_ts_v1", 0.25, 2.0).thompson_config(propensity_samples=64)
    assert config == ThompsonConfig(exploration=0.25, prior_precision=2.0, propensity_samples=64)
    assert SERVED.thompson_config() == ThompsonConfig()  # the served defaults, unchanged


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"statistics": "lin_ts_v1", "exploration": 0.5}, r"missing \['prior_precision'\]"),
        ({**SERVED.to_dict(), "policy": "x"}, r"unknown \['policy'\]"),
        ({**SERVED.to_dict(), "exploration": 0}, "exploration must be finite and > 0; got 0"),
        ({**SERVED.to_dict(), "prior_precision": "1"}, "prior_precision must be a number"),
        ({**SERVED.to_dict(), "statistics": " "}, "statistics must name"),
        ([0.5, 1.0], "a policy is a JSON object"),
    ],
)
def test_a_malformed_policy_is_refused_by_name(tmp_path, raw, message):
    (tmp_path / POLICY_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        PolicyVersion.from_artifact(tmp_path)


def test_a_folder_without_a_policy_says_which_file(tmp_path):
    with pytest.raises(ValueError, match=f"{POLICY_FILE}: cannot read a policy"):
        PolicyVersion.from_artifact(tmp_path)
