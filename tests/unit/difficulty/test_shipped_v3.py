"""The shipped difficulty v3 (the feature model), v4 and v5 (stacks) and their committed
reports: the same contract as v1/v2 (test_shipped.py), through ``load_tracer``.

Tolerances: as test_shipped.py, a report and the registered metrics are the same evaluation
run twice, 1e-5 (a tenth of the README's last digit); but v3 was registered with its fit's
float64 coefficients and the report reads the artifact's float32 ones (1.4e-5 apart in AUC), so
v3 gets 1e-4, still under the README's last digit. The stacks' members are loaded from the
stack's own copies; they must equal the registered members' files byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.common.registry import ModelRegistry
from models.difficulty.loader import load_tracer
from models.difficulty.stack_tracer import MEMBERS_DIR, StackedTracer
from models.difficulty.tracer_api import COLD_START, UNSEEN_ITEM, UNSEEN_SKILL, Interaction

REPO_ROOT = Path(__file__).resolve().parents[3]
# v3: the feature model; v4: stack of v1, v2, v3; v5: stack of v1, v3.
VERSIONS = {"v3": "lr", "v4": "stack", "v5": "stack"}
SAME_EVALUATION = 1e-5  # module docstring
FLOAT32_COEFFICIENTS = 1e-4  # v3's registered figures are its float64 fit's (module docstring)


def report(version: str) -> dict[str, Any]:
    path = REPO_ROOT / "reports" / f"difficulty_{version}.json"
    assert path.is_file(), f"{path} is committed with the repo (README: how to regenerate it)"
    return json.loads(path.read_text())


def learner_history(tracer: Any, rows: int = 60) -> list[Interaction]:
    """Attempts at the artifact's own items and skills."""
    items, skills = tracer.vocab.items[:40], tracer.vocab.skills[:15]
    return [
        Interaction(items[k % len(items)], skills[k % len(skills)], k % 3 > 0) for k in range(rows)
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_shipped_version_loads_as_its_architecture_with_flags(version: str) -> None:
    tracer = load_tracer(ModelRegistry().load("difficulty", version).path)
    assert tracer.architecture == VERSIONS[version]
    skill, item = tracer.vocab.skills[0], tracer.vocab.items[0]
    [cold] = tracer.predict([], [(item, skill)])
    assert cold.flags == (COLD_START,)
    [unseen_item, unseen_skill] = tracer.predict(
        [Interaction(item, skill, True)], [("no-such-item", skill), ("no-such-item", "nope")]
    )
    assert unseen_item.flags == (UNSEEN_ITEM,)
    assert unseen_skill.flags == (UNSEEN_ITEM, UNSEEN_SKILL)
    assert unseen_skill.p_correct == pytest.approx(tracer.priors.global_prior, abs=1e-12)
    assert tracer.skill_name(skill) and tracer.skill_name("nope") is None
    history = learner_history(tracer)
    assert len(tracer.trace(history)) == len(history)
    assert set(tracer.mastery(history)) == {h.skill_id for h in history}


@pytest.mark.parametrize("version", ["v4", "v5"])
def test_a_stacks_members_are_the_registered_members(version: str) -> None:
    """Each member copy (re-saved into the stack) answers as the registered version does."""
    registry = ModelRegistry()
    artifact = registry.load("difficulty", version)
    stack = load_tracer(artifact.path)
    assert isinstance(stack, StackedTracer)
    assert (artifact.path / MEMBERS_DIR).is_dir()
    history = learner_history(stack)
    candidates = [
        (i, s) for i, s in zip(stack.vocab.items[:10], stack.vocab.skills[:10], strict=True)
    ]
    for name, member_version in artifact.metadata.config["members"].items():
        registered = load_tracer(registry.load("difficulty", member_version).path)
        copy = stack.members[name]
        # Same weights and code on one machine: equal up to float32 kernel noise.
        assert [p.p_correct for p in copy.trace(history)] == pytest.approx(
            [p.p_correct for p in registered.trace(history)], abs=1e-7
        )
        assert [p.p_correct for p in copy.predict(history, candidates)] == pytest.approx(
            [p.p_correct for p in registered.predict(history, candidates)], abs=1e-7
        )


@pytest.mark.parametrize("version", VERSIONS)
def test_report_reproduces_the_registered_test_figures(version: str) -> None:
    written = report(version)
    registered = ModelRegistry().load("difficulty", version).metadata.metrics
    metrics = written["metrics"]
    tolerance = FLOAT32_COEFFICIENTS if version == "v3" else SAME_EVALUATION
    assert written["version"] == version and written["limit_students"] is None
    assert metrics["rows"] == registered["test_rows"]
    for key in ("auc", "acc", "log_loss"):
        assert metrics[key] == pytest.approx(registered[f"test_{key}"], abs=tolerance), key
    assert metrics["calibration"]["ece"] == pytest.approx(registered["test_ece"], abs=tolerance)


@pytest.mark.parametrize("version", VERSIONS)
def test_skill_names_read_without_loading_the_model(version: str) -> None:
    """What the at-risk job reads of the served version (a stack's: its primary member's)."""
    from models.difficulty.loader import artifact_skill_names

    path = ModelRegistry().load("difficulty", version).path
    assert artifact_skill_names(path) == load_tracer(path).skill_names
