"""What a model replica does for the lifecycle besides serving: it counts requests, errors and
latency per version and flushes them to the store (so every replica's counts add up), stores a
shadow's outputs, and runs the guardrail that ends a bad canary.

All store work runs in a background task, off the request path; a store that is down costs the
lifecycle its figures for a while, never a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from deployments.lifecycle import guardrail
from deployments.lifecycle.online_metrics import model_report
from deployments.lifecycle.rollout import (
    GuardrailConfig,
    ResolvedRollout,
    RolloutConfig,
    guardrail_event_id,
)
from deployments.lifecycle.serving_stats import ServingStats
from deployments.lifecycle.versions import Picked, VersionedModels
from store import TutorStore
from store.records import RolloutEventRecord, ShadowOutputRecord

logger = logging.getLogger("ray.serve")
FLUSH_INTERVAL_S = 10.0
MAX_BACKGROUND = 64
SHADOW_NICE = 19


def _lower_priority() -> None:
    """Run this worker thread at the lowest CPU priority (Linux: a thread has its own nice
    value), so a shadow's forward pass takes only CPU that serving leaves idle."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICE)


class RolloutObserver(Protocol):
    """Where a replica's lifecycle events go besides the store (Prometheus, at the Serve edge)."""

    def request(self, model: str, version: str, role: str, latency_ms: float, ok: bool) -> None: ...

    def rollback(self, model: str, canary: str, reasons: list[str]) -> None: ...

    def report(self, model: str, report: Any) -> None: ...


class _NoObserver:
    def request(self, model: str, version: str, role: str, latency_ms: float, ok: bool) -> None:
        pass

    def rollback(self, model: str, canary: str, reasons: list[str]) -> None:
        pass

    def report(self, model: str, report: Any) -> None:
        pass


class ReplicaRollout:
    def __init__(
        self,
        versions: VersionedModels,
        store: TutorStore,
        *,
        replica: str,
        observer: RolloutObserver | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = versions.model
        self._versions = versions
        self._store = store
        self._replica = replica
        self._observer = observer or _NoObserver()
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._stats = ServingStats()
        self.guardrail_config = GuardrailConfig()
        self._next_flush = 0.0
        self._next_check = 0.0  # the first call checks at once: a restarted replica learns of
        # a rollback that happened while it was away
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task] = set()
        self._shadow_outputs: list[ShadowOutputRecord] = []
        self._shadow_pool: ThreadPoolExecutor | None = None  # made on the first shadow call
        self.skipped = 0
        self.last_verdict: guardrail.GuardrailVerdict | None = None

    def apply(self, config: RolloutConfig) -> ResolvedRollout:
        """A deployment's reconfigure: load and switch to the new plan, then its guardrail."""
        plan = self._versions.apply(config)
        self.configure(config.guardrail)
        logger.info("%s rollout: %s", self.model, plan.describe())
        return plan

    def configure(self, config: GuardrailConfig) -> None:
        """After each reconfigure: a canary the guardrail already ended (the file still names
        it until the next `tutor` change) stays ended, also on a replica started since."""
        self.guardrail_config = config
        self._next_check = 0.0
        try:
            self._ended_by_guardrail()
        except Exception:  # the store is down: the first background check tries again
            logger.warning("%s: could not read the promotion history", self.model, exc_info=True)

    def _ended_by_guardrail(self) -> bool:
        plan = self._versions.plan
        if plan.canary is None or plan.canary_started_at is None:
            return False
        event_id = guardrail_event_id(self.model, plan.canary, plan.canary_started_at)
        if not any(
            e.event_id == event_id for e in self._store.rollout_events(self.model, limit=200)
        ):
            return False
        if self._versions.stop_canary(plan.canary):
            logger.warning("%s canary %s: ended by the guardrail", self.model, plan.canary)
        return True

    @contextlib.contextmanager
    def serving(self, picked: Picked) -> Iterator[None]:
        """Count one call of the picked version: its latency, and an error if it raises."""
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            self._stats.record(picked.version, latency_ms, ok)
            self._observer.request(self.model, picked.version, picked.role, latency_ms, ok)
            self._maybe_tick()

    async def run_shadow(self, work: Callable[..., Any], *args: Any) -> Any:
        """A shadow's computation, in the replica's one low-priority shadow thread."""
        if self._shadow_pool is None:
            self._shadow_pool = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"{self.model}-shadow",
                initializer=_lower_priority,
            )
        return await asyncio.get_running_loop().run_in_executor(self._shadow_pool, work, *args)

    async def save_shadow(
        self,
        *,
        shadow: Picked,
        served: Picked,
        turn_id: str,
        learner_id: str,
        output: dict[str, Any],
    ) -> None:
        """Keep what the shadow version answered for a turn another version served; written
        with the next flush, in one store write (a write per turn would contend with the
        turns' own writes for the store's lock)."""
        self._shadow_outputs.append(
            ShadowOutputRecord(
                turn_id=turn_id,
                learner_id=learner_id,
                model=self.model,
                version=shadow.version,
                served_version=served.version,
                output=output,
                ts=self._clock(),
            )
        )
        self._maybe_tick()

    def spawn(self, work: Coroutine[Any, Any, None], what: str = "shadow scoring") -> None:
        """Run ``work`` after the answer is sent; a failure is logged, never raised. Past
        ``MAX_BACKGROUND`` unfinished tasks (a shadow slower than the traffic) new work is
        skipped and counted in ``skipped``, so a shadow can never exhaust the replica."""
        if len(self._pending) >= MAX_BACKGROUND:
            work.close()
            self.skipped += 1
            if self.skipped in (1, 10, 100) or self.skipped % 1000 == 0:
                logger.warning("%s: %d %s tasks skipped (backlog)", self.model, self.skipped, what)
            return

        async def guarded() -> None:
            try:
                await work
            except Exception:
                logger.warning("%s: %s failed in the background", self.model, what, exc_info=True)

        task = asyncio.get_running_loop().create_task(guarded())
        self._pending.add(task)  # keep a reference until done (asyncio holds tasks weakly)
        task.add_done_callback(self._pending.discard)

    def _maybe_tick(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is None:
            # The last window of a burst is flushed too, with no request after it to trigger
            # it (else a status read after the traffic stops misses up to 10 s of requests).
            self._timer = loop.call_later(self._flush_interval_s + 0.1, self._on_timer)
        now = self._clock()
        if self._task is not None and not self._task.done():
            return
        if now < min(self._next_flush, self._next_check):
            return
        self._task = loop.create_task(self._tick(now))

    def _on_timer(self) -> None:
        self._timer = None
        if self._stats.pending() or self._shadow_outputs:
            self._maybe_tick()

    async def _tick(self, now: float) -> None:
        if now >= self._next_flush:
            self._next_flush = now + self._flush_interval_s
            # Taken on the loop, so nothing is recorded into what is being written.
            records = self._stats.drain(self.model, self._replica, now)
            shadows, self._shadow_outputs = self._shadow_outputs, []
            try:
                await asyncio.to_thread(self._save_stats, records)
            except Exception:
                logger.warning("%s: serving stats not flushed", self.model, exc_info=True)
            try:
                await asyncio.to_thread(self._store.add_shadow_outputs, shadows)
            except Exception:
                logger.warning(
                    "%s: %d shadow outputs not stored", self.model, len(shadows), exc_info=True
                )
        if now >= self._next_check:
            self._next_check = now + self.guardrail_config.interval_s
            try:
                await asyncio.to_thread(self.check_guardrail)
            except Exception:
                logger.warning("%s: guardrail check failed", self.model, exc_info=True)

    def _save_stats(self, records: list) -> None:
        for record in records:
            self._store.add_serving_stats(record)

    def check_guardrail(self) -> guardrail.GuardrailVerdict | None:
        """End the canary when the guardrail says so (or already said so on another replica)."""
        plan = self._versions.plan
        config = self.guardrail_config
        if plan.canary is None or plan.canary_started_at is None or not config.enabled:
            return None
        if self._ended_by_guardrail():
            return None
        event_id = guardrail_event_id(self.model, plan.canary, plan.canary_started_at)
        report = model_report(self._store, self.model, since=plan.canary_started_at)
        self._observer.report(self.model, report)
        verdict = guardrail.verdict(
            report=report, champion=plan.champion, canary=plan.canary, config=config
        )
        self.last_verdict = verdict
        if not verdict.rollback:
            return verdict
        self._store.add_rollout_event(
            RolloutEventRecord(
                event_id=event_id,
                model=self.model,
                action="rollback",
                from_version=plan.canary,
                to_version=plan.champion,
                percent=plan.percent,
                reason="; ".join(verdict.reasons),
                actor="guardrail",
                ts=self._clock(),
            )
        )
        if self._versions.stop_canary(plan.canary):
            logger.warning(
                "%s canary %s rolled back by the guardrail: %s",
                self.model,
                plan.canary,
                "; ".join(verdict.reasons),
            )
            self._observer.rollback(self.model, plan.canary, verdict.reasons)
        return verdict
