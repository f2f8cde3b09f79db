"""One tutoring turn through the graph: emotion || (load, difficulty || reward), strategy,
reply, store.

Every stage has a timeout and a fallback, and every fallback is named in ``degraded``: a learner
always gets a reply, and the response says which parts of it are not the models' work.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from deployments.schemas import (
    DifficultyResponse,
    EmotionResult,
    LearnerState,
    LLMInfo,
    StrategyChoice,
    TutorRequest,
    TutorResponse,
)
from deployments.tutoring.durable import PendingWrites, StoreGuard, StoreUnavailable, store_turn
from deployments.tutoring.exceptions import ConflictError
from deployments.tutoring.fallbacks import offline_info, unknown_emotion
from deployments.tutoring.history import as_rows, load_learner, posted_answer
from deployments.tutoring.records import record_from_response, response_from_record
from deployments.tutoring.rewards import reward_turn
from models.common.vocab import STRATEGIES
from models.llm.offline import offline_reply
from models.llm.prompts import ReplyContext
from models.personalization.context import RECENT_WINDOW, build_context
from store import AnswerRow, TutorStore
from store.records import TurnRecord

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
DEFAULT_STORE_TIMEOUT_S = 1.0


@dataclass
class TurnHandles:
    """The downstream deployments, as handles (or any object with the same async methods)."""

    emotion: Any
    difficulty: Any
    personalization: Any
    router: Any


@dataclass
class Turn:
    """A turn in progress: what is known about it before its reply is written."""

    request: TutorRequest
    turn_id: str
    request_id: str
    started: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    new_learner: bool = False
    answer_stored: bool = False  # the answer the request carried is in the store
    history: list[AnswerRow] = field(default_factory=list)  # (item_id, skill_id, correct)
    recent: list[TurnRecord] = field(default_factory=list)
    emotion: EmotionResult | None = None
    emotion_version: str = "unavailable"
    difficulty: DifficultyResponse | None = None
    strategy: StrategyChoice | None = None
    context: list[float] = field(default_factory=list)
    policy_version: str = "unavailable"

    def learner_state(self) -> LearnerState:
        return LearnerState(emotion=self.emotion or unknown_emotion(), difficulty=self.difficulty)


class TurnRunner:
    def __init__(
        self,
        handles: TurnHandles,
        store: TutorStore,
        *,
        stage_timeout_s: float,
        reply_timeout_s: float = 60.0,
        policy_statistics: Callable[[str], str] = lambda version: version,
        guard: StoreGuard | None = None,
        pending: PendingWrites | None = None,
    ) -> None:
        """``policy_statistics(version)``: the bandit statistics a policy version learns into
        (``deployments.tutoring.rewards.PolicyStatistics``). ``guard``: how store calls are
        bounded in time; ``pending``: the outbox for turns the store cannot take now (without
        one such a turn is answered and named as not saved)."""
        self.handles = handles
        self.store = store
        self.guard = guard or StoreGuard(store, timeout_s=DEFAULT_STORE_TIMEOUT_S)
        self.pending = pending
        self.policy_statistics = policy_statistics
        self.stage_timeout_s = stage_timeout_s
        self.reply_timeout_s = reply_timeout_s  # an LLM's whole reply takes longer than a model

    async def _stage(
        self,
        turn: Turn,
        name: str,
        call: Callable[[], Awaitable[T]],
        fallback: T,
        timeout_s: float | None = None,
    ) -> T:
        """Run one stage with a timeout; on failure record it in ``degraded`` and fall back."""
        timeout_s = timeout_s or self.stage_timeout_s
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: no task of its own per stage (Python 3.11's
            # wait_for wraps the call in one), which a turn's five stages would pay for.
            async with asyncio.timeout(timeout_s):
                return await call()
        except TimeoutError:
            turn.degraded.append(f"{name}: timed out after {timeout_s}s")
            logger.warning("stage %s timed out after %ss", name, timeout_s)
        except Exception as exc:  # a failing dependency degrades the answer, never the turn
            turn.degraded.append(f"{name}: {type(exc).__name__}")
            logger.exception("stage %s failed", name)
        finally:
            turn.timings_ms[name] = round((time.perf_counter() - started) * 1000, 2)
        return fallback

    async def replay(self, request: TutorRequest) -> TutorResponse | None:
        """The stored answer of a retried turn (same ``turn_id``), or None for a new turn; a
        first attempt still in this replica's outbox is the answer already given, too."""
        if self.pending is not None:
            self.pending.ensure_started()
        if request.turn_id is None:
            return None
        stored = self.pending.pending_turn(request.turn_id) if self.pending else None
        try:
            stored = stored or await self.guard.call(
                self.store.get_turn, request.turn_id, read=True
            )
        except StoreUnavailable:
            # Without the store a retry cannot be recognised; answering (degraded) beats a 503,
            # and the store keeps one turn per turn_id (the first saved) whatever is answered.
            logger.warning("store unavailable: turn %s answered as new", request.turn_id)
            return None
        if stored is None:
            return None
        if stored.learner_id != request.learner_id:
            raise ConflictError(f"turn_id {request.turn_id} belongs to another learner")
        return response_from_record(stored)

    async def prepare(self, request: TutorRequest, request_id: str) -> Turn:
        """Everything up to the reply: learner state, models, strategy."""
        turn = Turn(
            request=request,
            turn_id=request.turn_id or uuid.uuid4().hex,
            request_id=request_id,
            started=time.time(),
        )
        # The message's emotion needs nothing from the store, so it runs while the history
        # loads; difficulty needs the history, the reward the previous turn: both after it.
        await asyncio.gather(self._emotion(turn), self._history_then_difficulty(turn))
        await self._choose_strategy(turn)
        return turn

    async def _history_then_difficulty(self, turn: Turn) -> None:
        previous = await self._load(turn)
        if previous is None:
            await self._difficulty(turn)
        else:
            await asyncio.gather(self._difficulty(turn), self._reward(turn, previous))

    async def _load(self, turn: Turn) -> TurnRecord | None:
        """The learner's history into ``turn``; the previous turn when this one's answer
        rewards it."""
        request = turn.request
        answer = posted_answer(request, turn.turn_id, turn.started)
        started = time.perf_counter()
        try:
            loaded = await self.guard.call(
                load_learner, self.store, request.learner_id, answer, now=turn.started
            )
        except Exception as exc:  # the store is away: answer now, as to a learner seen first
            logger.warning("store: turn %s answered without history: %r", turn.turn_id, exc)
            turn.degraded.append("store: history unavailable, answered as a new learner")
            if request.answer is not None:  # still counts for this turn; journaled with it
                turn.history = as_rows([request.answer])
            return None
        finally:
            turn.timings_ms["load"] = round((time.perf_counter() - started) * 1000, 2)
        turn.new_learner, answered, answers, turn.recent = loaded
        turn.answer_stored = True
        turn.history = answers
        # The answer is to the exercise the previous turn set: it rewards that turn's strategy.
        return turn.recent[-1] if answered and turn.recent else None

    async def _reward(self, turn: Turn, previous: TurnRecord) -> None:
        # Once; an answer already sent with /v1/feedback wins. A stage of its own, so a failed
        # reward is named in `degraded` and never costs the turn its history.
        correct = float(turn.request.answer.correct)
        await self._stage(
            turn,
            "reward",
            lambda: self.guard.call(
                reward_turn,
                self.store,
                previous,
                source="answer",
                reward=correct,
                now=turn.started,
                statistics=self.policy_statistics,
            ),
            False,
        )

    async def _emotion(self, turn: Turn) -> None:
        response = await self._stage(
            turn,
            "emotion",
            lambda: self.handles.emotion.classify.remote(
                [turn.request.message], learner_id=turn.request.learner_id, turn_id=turn.turn_id
            ),
            None,
        )
        if response is not None:
            turn.emotion, turn.emotion_version = response.results[0], response.model_version

    async def _difficulty(self, turn: Turn) -> None:
        if not turn.request.candidates:
            return
        turn.difficulty = await self._stage(
            turn,
            "difficulty",
            lambda: self.handles.difficulty.predict.remote(
                turn.history,
                turn.request.candidates,
                learner_id=turn.request.learner_id,
                turn_id=turn.turn_id,
            ),
            None,
        )

    async def _choose_strategy(self, turn: Turn) -> None:
        emotion = turn.emotion or unknown_emotion()
        predictions = turn.difficulty.predictions if turn.difficulty else []
        session_turns = sum(
            1
            for t in turn.recent
            if turn.request.session_id and t.session_id == turn.request.session_id
        )
        last_turn_at = turn.recent[-1].ts if turn.recent else None
        context = build_context(
            states=emotion.states,
            recommended_p_correct=turn.difficulty.recommended.p_correct
            if turn.difficulty
            else None,
            candidate_p_correct=[p.p_correct for p in predictions],
            # Only the newest RECENT_WINDOW count: no list of up to 1,000 answers per turn.
            answers=[correct for _, _, correct in turn.history[-RECENT_WINDOW:]],
            session_turns=session_turns,
            seconds_since_last_turn=(turn.started - last_turn_at) if last_turn_at else None,
        ).tolist()
        uniform = StrategyChoice(name=random.choice(STRATEGIES), propensity=1.0 / len(STRATEGIES))
        chosen = await self._stage(
            turn,
            "personalization",
            lambda: self.handles.personalization.choose.remote(
                context, learner_id=turn.request.learner_id, turn_id=turn.turn_id
            ),
            (uniform, "unavailable"),
        )
        turn.strategy, turn.policy_version = chosen
        # The context a policy chose in is logged for learning; a fallback choice logs none.
        turn.context = context if turn.policy_version != "unavailable" else []

    def reply_context(self, turn: Turn) -> ReplyContext:
        emotion = turn.emotion or unknown_emotion()
        recommended = turn.difficulty.recommended if turn.difficulty else None
        return ReplyContext(
            message=turn.request.message,
            strategy=turn.strategy.name,
            emotion_state=emotion.state,
            mastery=recommended.p_correct if recommended else None,
            next_exercise=recommended.model_dump() if recommended else None,
            history=[(t.message, t.reply) for t in session_memory(turn)],
            priority=turn.request.priority,
            max_latency_ms=turn.request.max_latency_ms,
        )

    async def reply(self, turn: Turn) -> tuple[str, LLMInfo]:
        context = self.reply_context(turn)
        fallback = (offline_reply(context), offline_info("router unavailable"), None)
        text, llm, error = await self._stage(
            turn,
            "reply",
            lambda: self.handles.router.respond.remote(context),
            fallback,
            timeout_s=self.reply_timeout_s,
        )
        if error:
            turn.degraded.append(f"reply: {error}")
        return text, llm

    async def stream_reply(self, turn: Turn) -> AsyncIterator[dict]:
        """Router events, or the offline reply when the router itself cannot be reached."""
        context = self.reply_context(turn)
        started = time.perf_counter()
        sent_token = False
        try:
            generator = self.handles.router.options(stream=True).stream.remote(context)
            async for event in generator:
                sent_token = sent_token or event["type"] == "token"
                yield event
            return
        except Exception as exc:
            logger.exception("router stream failed")
            turn.degraded.append(f"reply: {type(exc).__name__}")
            if sent_token:
                yield {"type": "error", "message": "reply stream broke", "llm": offline_info("")}
                return
        finally:
            turn.timings_ms["reply"] = round((time.perf_counter() - started) * 1000, 2)
        yield {"type": "token", "text": offline_reply(context)}
        yield {"type": "done", "llm": offline_info("router unavailable")}

    async def stream_turn(self, turn: Turn) -> AsyncIterator[dict]:
        """The reply's ``token`` and ``error`` events, then ``{"type": "summary", "response"}``
        once the turn is stored (with the time to its first token)."""
        pieces: list[str] = []
        first_token_at: float | None = None
        started = time.perf_counter()
        llm = None
        async for event in self.stream_reply(turn):
            if event["type"] == "token":
                first_token_at = first_token_at or time.perf_counter()
                pieces.append(event["text"])
                yield event
                continue
            llm = event["llm"]
            if event["type"] == "error":
                turn.degraded.append(f"reply: {event['message']}")
                yield event
        if first_token_at is not None:
            turn.timings_ms["first_token"] = round((first_token_at - started) * 1000, 2)
        yield {"type": "summary", "response": await self.finish(turn, "".join(pieces), llm)}

    async def finish(self, turn: Turn, reply: str, llm: LLMInfo) -> TutorResponse:
        turn.timings_ms["total"] = round((time.time() - turn.started) * 1000, 2)
        response = TutorResponse(
            turn_id=turn.turn_id,
            learner_id=turn.request.learner_id,
            reply=reply,
            learner_state=turn.learner_state(),
            strategy=turn.strategy,
            llm=llm,
            model_versions=self.model_versions(turn),
            timings_ms=turn.timings_ms,
            degraded=turn.degraded,
            new_learner=turn.new_learner,
        )
        record = record_from_response(
            response,
            session_id=turn.request.session_id,
            ts=turn.started,
            request_id=turn.request_id,
            message=turn.request.message,
            context=turn.context,
        )
        answer = posted_answer(turn.request, turn.turn_id, turn.started)  # unless load stored it
        answer = None if turn.answer_stored else answer
        started = time.perf_counter()
        problem = await store_turn(
            self.guard, self.pending, self.store, record, answer, statistics=self.policy_statistics
        )
        turn.timings_ms["save"] = round((time.perf_counter() - started) * 1000, 2)
        response.degraded += [problem] if problem else []
        response.timings_ms = turn.timings_ms
        return response

    def model_versions(self, turn: Turn) -> dict[str, str]:
        versions = {"emotion": turn.emotion_version, "personalization": turn.policy_version}
        if turn.difficulty is not None:
            versions["difficulty"] = turn.difficulty.model_version
        return versions


def session_memory(turn: Turn) -> list[TurnRecord]:
    """The conversation the reply continues: the learner's recent turns of this session (all
    recent turns when the request names no session)."""
    session = turn.request.session_id
    return [t for t in turn.recent if session is None or t.session_id == session]
