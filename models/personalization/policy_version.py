"""A registered version of the personalization policy: ``policy.json`` in the registry.

``models/artifacts/personalization/vN/policy.json`` holds the three things that make one
Thompson-sampling policy differ from another:

* ``statistics``: the name of the bandit's sufficient statistics in the store. Versions that
  share it learn from each other's turns (a canary with a new exploration starts warm).
* ``exploration``: the scale of the posterior's spread (``ThompsonConfig.exploration``).
* ``prior_precision``: the ridge prior on the weights (``ThompsonConfig.prior_precision``).

Serving tunables (how old cached statistics may be, how many draws estimate a propensity) stay
in the deployment's user_config; ``thompson_config`` takes them as arguments.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.personalization.bandit import ThompsonConfig

MODEL_NAME = "personalization"
POLICY_FILE = "policy.json"


@dataclass(frozen=True)
class PolicyVersion:
    statistics: str  # the store's name for the bandit statistics this version reads and writes
    exploration: float  # scales the posterior covariance's square root
    prior_precision: float  # ridge: A0 = prior_precision * I

    def __post_init__(self) -> None:
        if not isinstance(self.statistics, str) or not self.statistics.strip():
            raise ValueError(
                f"statistics must name the store's statistics; got {self.statistics!r}"
            )
        for name in ("exploration", "prior_precision"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number; got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be finite and > 0; got {value!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PolicyVersion:
        """Exactly the three fields: a missing or unknown key is refused by name."""
        if not isinstance(raw, dict):
            raise ValueError(f"a policy is a JSON object; got {type(raw).__name__}")
        expected = {f.name for f in fields(cls)}
        missing, unknown = sorted(expected - raw.keys()), sorted(raw.keys() - expected)
        if missing or unknown:
            raise ValueError(f"policy fields: missing {missing}, unknown {unknown}")
        return cls(**raw)

    @classmethod
    def from_artifact(cls, path: Path | str) -> PolicyVersion:
        """The policy of a registered version's folder (``Artifact.path``)."""
        policy_file = Path(path) / POLICY_FILE
        try:
            raw = json.loads(policy_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{policy_file}: cannot read a policy: {exc}") from exc
        try:
            return cls.from_dict(raw)
        except ValueError as exc:
            raise ValueError(f"{policy_file}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: Path | str) -> Path:
        """Write ``policy.json`` into ``directory`` (the files a version registers)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / POLICY_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def thompson_config(
        self, *, propensity_samples: int = ThompsonConfig.propensity_samples
    ) -> ThompsonConfig:
        """The bandit's config: this version's exploration and prior, the serving tunables'
        propensity samples."""
        return ThompsonConfig(
            exploration=float(self.exploration),
            prior_precision=float(self.prior_precision),
            propensity_samples=propensity_samples,
        )
