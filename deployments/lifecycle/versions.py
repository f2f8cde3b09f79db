"""The versions of one model that a replica holds, and the plan that picks one per call.

Every version the plan names (champion, canary, shadow) is loaded beside the others before the
plan changes, so a swap never waits on a load and a call in flight keeps the model object it
picked: a turn never mixes two versions of one model, and no request fails during a change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from deployments.lifecycle.rollout import ResolvedRollout, Role, RolloutConfig

logger = logging.getLogger("ray.serve")
M = TypeVar("M")


@dataclass(frozen=True)
class Picked(Generic[M]):
    version: str
    role: Role
    model: M


class VersionedModels(Generic[M]):
    def __init__(
        self,
        model: str,
        *,
        load: Callable[[str], M],
        resolve: Callable[[str], str],
        reload_key: Callable[[], object] = lambda: None,
    ) -> None:
        """``load(version)`` builds one version; ``resolve`` turns "latest" into a version;
        ``reload_key()`` changes when a setting that shapes every loaded model changes (e.g. a
        cache size), so that all versions are rebuilt with it."""
        self.model = model
        self._load = load
        self._resolve = resolve
        self._reload_key = reload_key
        self._loaded: dict[str, M] = {}
        self._loaded_with: object = None
        self._plan: ResolvedRollout | None = None
        self._lock = threading.Lock()  # reconfigure and the guardrail may change the plan

    @property
    def plan(self) -> ResolvedRollout:
        if self._plan is None:
            raise RuntimeError("reconfigure() loads the models before traffic")
        return self._plan

    def apply(self, config: RolloutConfig) -> ResolvedRollout:
        """Load what the new plan needs, then switch to it, then drop what it no longer needs."""
        plan = ResolvedRollout.resolve(self.model, config, self._resolve)
        key = self._reload_key()
        keep = self._loaded if key == self._loaded_with else {}
        loaded = {v: keep[v] if v in keep else self._load_one(v) for v in plan.loaded}
        with self._lock:
            self._loaded, self._loaded_with, self._plan = loaded, key, plan
        return plan

    def _load_one(self, version: str) -> M:
        model = self._load(version)
        logger.info("%s %s loaded", self.model, version)
        return model

    def stop_canary(self, canary: str) -> bool:
        """The guardrail's verdict: everyone on the champion (the canary stays loaded until the
        next reconfigure, for calls that still hold it). False when that canary is not running."""
        with self._lock:
            if self._plan is None or self._plan.canary != canary:
                return False
            self._plan = self._plan.without_canary()
            return True

    def pick(self, learner_id: str | None = None, requested: str | None = None) -> Picked[M]:
        with self._lock:
            route = self.plan.route(learner_id, requested)
            return Picked(route.version, route.role, self._loaded[route.version])

    def get(self, version: str) -> M:
        with self._lock:
            return self._loaded[version]

    def shadow(self) -> Picked[M] | None:
        with self._lock:
            version = self.plan.shadow
            return Picked(version, "shadow", self._loaded[version]) if version else None
