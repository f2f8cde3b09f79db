"""Store calls that never hold a turn up, and the outbox for the writes the store cannot take.

``StoreGuard`` runs each store call in a bounded pool of its own (a locked SQLite file parks a
thread for its busy timeout: in the default executor, six threads on two cores, that would
starve every other ``to_thread``) and waits ``timeout_s`` for it. A call that fails or times
out marks the store away for ``away_s``: calls in that time fail at once instead of each
waiting the timeout, then one call at a time tries again, and a write that succeeds ends it.

``PendingWrites`` journals what could not be stored (a turn, with the answer it carried; a
feedback) in ``store.outbox.Outbox`` before the answer is sent, and drains it in the
background with backoff, applying each entry idempotently (a turn by its turn_id, a feedback by
its turn), so every answered turn is stored once the store is back, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from deployments.tutoring.rewards import apply_feedback, reward_turn
from store import FeedbackRecord, StoreError, TurnRecord, TutorStore
from store.outbox import Entry, Outbox
from store.records import AnswerRecord

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
STORE_WORKERS = 8  # store calls at once per ingress replica; each is short when the store is up
AWAY_S = 2.0
RETRY_S = (0.5, 5.0)  # the drain's backoff while the store is away: first and longest wait
IDLE_CHECK_S = 10.0  # how often an idle drain looks for journals of replicas that died
TURN, FEEDBACK = "turn", "feedback"


class StoreUnavailable(RuntimeError):
    """The store did not answer in time, failed, or is known to be away."""


class StoreGuard:
    def __init__(
        self,
        store: TutorStore,
        *,
        timeout_s: float,
        workers: int = STORE_WORKERS,
        away_s: float = AWAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.away_s = away_s
        self._clock = clock
        # Threads start on the first call, inside the replica (never at import).
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")
        self._away_until: float | None = None
        self._probing = False

    @property
    def away(self) -> bool:
        """Whether a call failed in the last ``away_s`` (and none has succeeded since)."""
        return self._away_until is not None and self._clock() < self._away_until

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        probe: bool = False,
        read: bool = False,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)`` in the store's pool, or StoreUnavailable. ``probe``: try even
        while the store is away (the outbox's drain, which is how it is found back). ``read``:
        a call that only reads, whose success does not end an away spell (a SQLite file locked
        for writing still answers reads)."""
        probing = False
        if not probe and self._away_until is not None:
            if self._clock() < self._away_until or self._probing:
                raise StoreUnavailable("the store is away (a recent call failed)")
            self._probing = probing = True
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args, **kwargs)
        )
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can turn a cancellation
            # that meets its timeout into a TimeoutError, and the drain task would live on.
            async with asyncio.timeout(self.timeout_s):
                result = await future
        except TimeoutError as exc:
            self._failed()
            raise StoreUnavailable(f"no answer in {self.timeout_s}s") from exc
        except StoreError as exc:
            self._failed()
            raise StoreUnavailable(str(exc)) from exc
        finally:
            if probing:
                self._probing = False
        if self._away_until is not None and not read:
            logger.warning("store: answering again")
            self._away_until = None
        return result

    def _failed(self) -> None:
        if self._away_until is None:
            logger.warning("store: unavailable; writes go to the outbox")
        self._away_until = self._clock() + self.away_s


class OutboxObserver(Protocol):
    """Where the outbox reports (the ingress's Prometheus metrics)."""

    def queued(self, kind: str, depth: int) -> None: ...

    def replayed(self, kind: str, depth: int) -> None: ...


class TurnNotStored(LookupError):
    """A feedback whose turn is not in the store yet (its entry is in another journal)."""


def apply_turn(
    store: TutorStore,
    record: TurnRecord,
    answer: AnswerRecord | None,
    *,
    statistics: Callable[[str], str],
) -> bool:
    """Store a turn with the answer it carried; True when the turn was new. The answer goes
    first and rewards the learner's turn before this one (once per turn and source), as when
    the turn's own load stores it; every step is idempotent, so replaying it is safe."""
    if answer is not None and store.add_answer(answer):
        earlier = [
            t
            for t in store.recent_turns(record.learner_id, limit=20)
            if t.ts < record.ts and t.turn_id != record.turn_id
        ]
        if earlier:
            reward_turn(
                store,
                max(earlier, key=lambda t: t.ts),
                source="answer",
                reward=float(answer.correct),
                now=answer.ts,
                statistics=statistics,
            )
    return store.save_turn(record)


async def store_turn(
    guard: StoreGuard,
    pending: PendingWrites | None,
    store: TutorStore,
    record: TurnRecord,
    answer: AnswerRecord | None,
    *,
    statistics: Callable[[str], str],
) -> str | None:
    """Store an answered turn, or journal it (fsynced) before its answer goes out; what to add
    to its ``degraded``, if anything."""
    try:
        await guard.call(apply_turn, store, record, answer, statistics=statistics)
        return None
    except Exception as exc:
        queued = pending is not None and await pending.queue_turn(record, answer)
        logger.warning("store: turn %s %s: %r", record.turn_id, "queued" if queued else "lost", exc)
    if queued:
        return "store: the turn is queued and will be saved"
    return "store: the turn was not saved"


class PendingWrites:
    def __init__(
        self,
        outbox: Outbox,
        guard: StoreGuard,
        *,
        statistics: Callable[[str], str],
        observer: OutboxObserver | None = None,
        retry_s: tuple[float, float] = RETRY_S,
    ) -> None:
        self.outbox = outbox
        self.guard = guard
        self._statistics = statistics
        self._observer = observer
        self._retry_s = retry_s
        # One thread for the journal: its fsync must not wait behind store calls stuck on a lock.
        self._journal = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    # ---- the request path -------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the drain on the running loop (first use; again if it ever stopped): it adopts
        the journals of dead replicas at once, so a restart replays what they held."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def queue_turn(self, record: TurnRecord, answer: AnswerRecord | None) -> bool:
        """Journal a turn (fsynced); False when even the journal failed (nothing promised)."""
        data = {"turn": record.model_dump(), "answer": answer.model_dump() if answer else None}
        return await self._append(TURN, record.turn_id, data)

    async def queue_feedback(self, feedback: FeedbackRecord) -> bool:
        return await self._append(FEEDBACK, feedback.turn_id, feedback.model_dump())

    def pending_turn(self, turn_id: str) -> TurnRecord | None:
        entry = self.outbox.find(TURN, turn_id)
        return None if entry is None else TurnRecord.model_validate(entry.data["turn"])

    def pending_feedback(self, turn_id: str) -> FeedbackRecord | None:
        entry = self.outbox.find(FEEDBACK, turn_id)
        return None if entry is None else FeedbackRecord.model_validate(entry.data)

    async def others_pending(self) -> bool:
        """Whether another journal on this machine holds writes (another replica's, or a dead
        one's not yet adopted): a turn the store does not know may be in it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._journal, self.outbox.others_pending)

    def depth(self) -> int:
        return self.outbox.depth()

    async def _append(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        self.ensure_started()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._journal, self.outbox.append, kind, key, data)
        except OSError:
            return False  # logged by the outbox
        if self._observer is not None:
            self._observer.queued(kind, self.depth())
        self._wake.set()
        return True

    # ---- the drain --------------------------------------------------------------------------

    def _apply(self, entry: Entry) -> None:
        store = self.guard.store
        if entry.kind == TURN:
            answer = entry.data.get("answer")
            apply_turn(
                store,
                TurnRecord.model_validate(entry.data["turn"]),
                AnswerRecord.model_validate(answer) if answer else None,
                statistics=self._statistics,
            )
        elif entry.kind == FEEDBACK:
            turn = store.get_turn(entry.key)
            if turn is None:
                raise TurnNotStored(entry.key)
            feedback = FeedbackRecord.model_validate(entry.data)
            apply_feedback(store, turn, feedback, statistics=self._statistics)
        else:
            raise ValueError(f"unknown outbox entry kind {entry.kind!r}")

    async def drain_once(self) -> bool:
        """Adopt dead replicas' journals, then apply what is pending, in order, until the store
        fails; whether nothing is left."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._journal, self.outbox.adopt)
        for entry in self.outbox.pending():
            try:
                await self.guard.call(self._apply, entry, probe=True)
            except StoreUnavailable:
                return False  # keep the order: try again from here after a backoff
            except TurnNotStored:
                continue  # its turn is in a journal drained elsewhere: wait for it
            except Exception:
                # A write the store refuses (not a failure to reach it) would block every write
                # after it: kept, retried each round, and logged.
                entry.attempts += 1
                if entry.attempts in (1, 10, 100):
                    logger.exception("outbox: %s %s refused by the store", entry.kind, entry.key)
                continue
            await loop.run_in_executor(self._journal, self.outbox.done, entry)
            if self._observer is not None:
                self._observer.replayed(entry.kind, self.depth())
        return self.depth() == 0

    async def _run(self) -> None:
        delay = self._retry_s[0]
        while True:
            self._wake.clear()  # before the round: a write queued during it wakes the next
            try:
                drained = await self.drain_once()
            except Exception:
                logger.exception("outbox: drain failed")
                drained = False
            if drained:
                delay = self._retry_s[0]
                # Until a write is queued, or time to look for dead replicas' journals.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_CHECK_S):  # (not wait_for: see call())
                        await self._wake.wait()
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_s[1])
