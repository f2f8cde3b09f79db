"""/healthz: each deployment, the store and the LLM providers, probed concurrently."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from deployments.schemas import ComponentHealth, HealthResponse, RolloutState
from deployments.tutoring.durable import PendingWrites, StoreGuard
from deployments.tutoring.turn_runner import TurnHandles
from store import TutorStore

logger = logging.getLogger("ray.serve")
PROBE_TIMEOUT_S = 5.0


async def _probe(name: str, handle: Any) -> tuple[str, ComponentHealth, RolloutState | None]:
    """A model deployment answers with its rollout (versions in service), or is reported down."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            rollout = await handle.rollout.remote()
        return name, ComponentHealth(ok=True), RolloutState.model_validate(rollout)
    except Exception as exc:
        logger.warning("health: %s did not answer: %r", name, exc)
        return name, ComponentHealth(ok=False, detail=type(exc).__name__), None


class HealthCheck:
    def __init__(
        self,
        handles: TurnHandles,
        store: TutorStore,
        *,
        guard: StoreGuard | None = None,
        pending: PendingWrites | None = None,
    ) -> None:
        self._handles = handles
        self._store = store
        self._guard = guard or StoreGuard(store, timeout_s=PROBE_TIMEOUT_S)
        self._pending = pending

    async def check(self) -> HealthResponse:
        """``status`` is ``degraded`` when a deployment or the store is down. Providers do not
        count: with none usable, the offline responder still answers every turn."""
        models = {
            "Emotion": self._handles.emotion,
            "Difficulty": self._handles.difficulty,
            "Personalization": self._handles.personalization,
        }
        probes = await asyncio.gather(*(_probe(n, h) for n, h in models.items()))
        deployments = {name: health for name, health, _ in probes}
        rollouts = {name.lower(): r for name, _, r in probes if r is not None}
        providers = {}
        try:
            call = self._handles.router.provider_states.remote()
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                providers = await call
            usable = sum(p.configured and p.breaker != "open" for p in providers.values())
            detail = f"{usable} of {len(providers)} providers usable, then the offline responder"
            deployments["LLMRouter"] = ComponentHealth(ok=True, detail=detail)
        except Exception as exc:
            logger.warning("health: LLMRouter did not answer: %r", exc)
            deployments["LLMRouter"] = ComponentHealth(ok=False, detail=type(exc).__name__)
        deployments["Ingress"] = ComponentHealth(ok=True)
        store = await self._store_health()
        healthy = store.ok and all(h.ok for h in deployments.values())
        return HealthResponse(
            status="ok" if healthy else "degraded",
            deployments=deployments,
            store=store,
            model_versions={model: r.champion for model, r in rollouts.items()},
            rollouts=rollouts,
            providers=providers,
        )

    async def _store_health(self) -> ComponentHealth:
        """Not ok while it fails to answer, while writes to it fail (a locked SQLite file still
        answers a ping), or while writes wait in the outbox for it (how many: the detail)."""
        if self._pending is not None:
            self._pending.ensure_started()  # a restarted app replays dead replicas' journals
        problem = "writes are failing" if self._guard.away else None
        try:  # not through the guard: a ping that works says nothing about writes
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await asyncio.to_thread(self._store.ping)
        except Exception as exc:
            logger.warning("health: the store did not answer: %r", exc)
            problem = str(exc) or type(exc).__name__
        waiting = self._pending.depth() if self._pending is not None else 0
        outbox = f"{waiting} writes waiting in the outbox" if waiting else None
        detail = "; ".join(part for part in (problem, outbox) if part) or None
        return ComponentHealth(ok=problem is None and not waiting, detail=detail)
