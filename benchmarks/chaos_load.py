"""The load of `make chaos`: closed-loop learners sending tutor turns and feedback.

Each client is a learner app: it sends a turn with a turn_id of its own making, waits for the
answer, and, when the answer failed (no HTTP answer, 408 or 5xx), retries it once with the same
turn_id, as the API invites (``TutorRequest.turn_id``: a retry replays the stored turn). For a
share of answered turns it then sends a reward to /v1/feedback (retried once the same way). A
feedback answered 503 ``store_unavailable`` (the store is away and the turn is not in this
replica's outbox) is retried later, after its Retry-After, in the background while the client
goes on with its next turn, a bounded number of times (``LoadSpec.feedback_later_s``), as a
learner app would keep it and send it again. A 200, or a 202 whose body says ``queued`` (the
feedback is journaled in the outbox with its turn), acknowledges it. Every attempt is recorded
with its status, so the report can say which writes were acknowledged and check each one against
the store afterwards.

A retry first waits until the harness says the application is serving (``LoadControl.up``):
while the whole application restarts, a client with backoff would wait for it the same way,
rather than spend its one retry on a closed port. Each logical turn's message ends with its
turn_id in brackets (``marker``), so the store can be searched for a turn stored twice under two
ids, which the turn_id's uniqueness alone would hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from dataclasses import dataclass, field

import aiohttp

from benchmarks.step_load import MESSAGES

REWARDS = (0.0, 0.25, 0.5, 0.75, 1.0)
MARKER = re.compile(r"\[([A-Za-z0-9_.:-]+)\]$")
MAX_RETRY_DELAY_S = 5.0
MAX_LATER_DELAY_S = 15.0  # a feedback's later tries: Retry-After, bounded


@dataclass(frozen=True)
class Attempt:
    """One HTTP request and what came back (times are epoch seconds)."""

    sent: float
    done: float
    status: int  # 0: no HTTP answer (connection refused or dropped, client timeout)
    code: str | None = None  # the error shape's code, or the exception's name
    degraded: tuple[str, ...] = ()
    retry_after: str | None = None
    accepted: bool | None = None  # /v1/feedback's ``accepted``
    queued: bool | None = None  # /v1/feedback's ``queued`` (with a 202)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def acknowledges(self) -> bool:
        """A 200, or a 202 that says the write waits in the outbox: the store must hold it."""
        return self.ok or (self.status == 202 and self.queued is True)

    @property
    def store_unavailable(self) -> bool:
        """The answer that asks to be sent again later: not a loss, not yet an acknowledgement."""
        return self.status == 503 and self.code == "store_unavailable"

    @property
    def retriable(self) -> bool:
        """What a client retries: no answer, the time limit, or the server's failure."""
        return self.status == 0 or self.status == 408 or self.status >= 500

    @property
    def label(self) -> str:
        return str(self.status) if self.status else (self.code or "no answer")


@dataclass
class FeedbackOutcome:
    reward: float
    first: Attempt
    retries: list[Attempt] = field(default_factory=list)

    @property
    def attempts(self) -> list[Attempt]:
        return [self.first, *self.retries]

    @property
    def acknowledged(self) -> bool:
        """A 200 (``accepted`` false: it already was on record) or a queued 202."""
        return any(a.acknowledges for a in self.attempts)

    @property
    def store_unavailable(self) -> bool:
        """Answered 503 ``store_unavailable`` at least once."""
        return any(a.store_unavailable for a in self.attempts)


@dataclass
class TurnOutcome:
    phase: str  # the phase in which its first attempt was sent
    client: int
    turn_id: str
    learner_id: str
    first: Attempt
    retry: Attempt | None = None
    feedback: FeedbackOutcome | None = None
    complete: bool = False  # its retry and feedback, if any, are done

    @property
    def answered(self) -> bool:
        return self.first.ok or (self.retry is not None and self.retry.ok)

    @property
    def answer(self) -> Attempt | None:
        return (
            self.first if self.first.ok else (self.retry if self.retry and self.retry.ok else None)
        )


@dataclass(frozen=True)
class LoadSpec:
    clients: int = 16
    learners_per_client: int = 4  # a fixed pool: clients x this many learners
    feedback_share: float = 0.3
    retry_delay_s: float = 0.5  # when the failed answer named no Retry-After
    retry_wait_s: float = 300.0  # at most this long for the application to serve again
    pause_after_failure_s: float = 1.0  # backoff after a turn whose retry failed too
    # A feedback answered 503 store_unavailable is sent again after each Retry-After (at most
    # MAX_LATER_DELAY_S) until this long after its first attempt: a store fault's length and
    # the outbox's drain, with room to spare.
    feedback_later_s: float = 90.0
    timeout_s: float = 120.0  # the proxy's own request_timeout_s
    seed: int = 0
    tag: str = field(default_factory=lambda: f"chaos{random.randrange(16**6):06x}")

    def learner(self, client: int, seq: int) -> str:
        return f"{self.tag}-l{client * self.learners_per_client + seq % self.learners_per_client}"


class LoadControl:
    """What the harness tells the clients: the current phase, whether the app serves, stop."""

    def __init__(self) -> None:
        self.phase = "warmup"
        self.up = asyncio.Event()
        self.up.set()
        self.stopping = False


def turn_body(spec: LoadSpec, client: int, seq: int, turn_id: str) -> dict:
    text = MESSAGES[(client + seq) % len(MESSAGES)]
    return {
        "learner_id": spec.learner(client, seq),
        "turn_id": turn_id,
        "message": f"{text} [{turn_id}]",
        "answer": {"item_id": str(1366 + seq % 50), "skill_id": "9", "correct": seq % 3 != 0},
        "candidates": [
            {"item_id": str(2000 + k), "skill_id": s} for k, s in enumerate(("9", "15", "7"))
        ],
    }


def marker(message: str) -> str | None:
    """The turn_id a harness turn carries at the end of its message."""
    found = MARKER.search(message)
    return found.group(1) if found else None


async def post(session: aiohttp.ClientSession, path: str, body: dict) -> Attempt:
    sent = time.time()
    try:
        async with session.post(path, json=body) as response:
            status = response.status
            retry_after = response.headers.get("Retry-After")
            payload = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Attempt(sent, time.time(), 0, type(exc).__name__)
    except ValueError:  # not JSON (e.g. a proxy's plain-text error page)
        return Attempt(sent, time.time(), status, "not_json", retry_after=retry_after)
    done = time.time()
    if status in (200, 202) and isinstance(payload, dict):
        return Attempt(
            sent,
            done,
            status,
            degraded=tuple(payload.get("degraded") or ()),
            accepted=payload.get("accepted"),
            queued=payload.get("queued"),
        )
    try:
        code = payload["error"]["code"]
    except (KeyError, TypeError):
        code = "not_the_error_shape"
    return Attempt(sent, done, status, code, retry_after=retry_after)


async def _retry(
    session: aiohttp.ClientSession,
    path: str,
    body: dict,
    failed: Attempt,
    spec: LoadSpec,
    control: LoadControl,
) -> Attempt:
    # Past the bound it retries anyway: the attempt records what it met.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(control.up.wait(), timeout=spec.retry_wait_s)
    await asyncio.sleep(_delay(failed, spec.retry_delay_s, MAX_RETRY_DELAY_S))
    return await post(session, path, body)


def _delay(attempt: Attempt, default: float, cap: float) -> float:
    try:
        return max(0.0, min(float(attempt.retry_after), cap))
    except (TypeError, ValueError):
        return default


async def _feedback_later(
    session: aiohttp.ClientSession,
    body: dict,
    outcome: TurnOutcome,
    spec: LoadSpec,
    control: LoadControl,
) -> None:
    """Send a feedback answered 503 store_unavailable again, after each Retry-After, until it
    is acknowledged, answered otherwise, or ``spec.feedback_later_s`` passed."""
    feedback = outcome.feedback
    deadline = feedback.first.sent + spec.feedback_later_s
    last = feedback.first
    while last.store_unavailable and time.time() < deadline:
        await asyncio.sleep(_delay(last, spec.retry_delay_s, MAX_LATER_DELAY_S))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(control.up.wait(), timeout=spec.retry_wait_s)
        last = await post(session, "/v1/feedback", body)
        feedback.retries.append(last)
        if last.retriable and not last.store_unavailable:  # e.g. a restart meanwhile: once more
            last = await _retry(session, "/v1/feedback", body, last, spec, control)
            feedback.retries.append(last)
    outcome.complete = True


async def _client(
    session: aiohttp.ClientSession,
    client: int,
    spec: LoadSpec,
    control: LoadControl,
    outcomes: list[TurnOutcome],
) -> None:
    rng = random.Random(spec.seed * 1000 + client)
    seq = 0
    later: list[asyncio.Task] = []
    while not control.stopping:
        seq += 1
        turn_id = f"{spec.tag}-c{client}-{seq}"
        body = turn_body(spec, client, seq, turn_id)
        phase = control.phase
        outcome = TurnOutcome(phase, client, turn_id, body["learner_id"], Attempt(0, 0, -1))
        outcomes.append(outcome)  # at once: a run cut short still shows the turn in flight
        outcome.first = await post(session, "/v1/tutor", body)
        if outcome.first.retriable:
            outcome.retry = await _retry(session, "/v1/tutor", body, outcome.first, spec, control)
        if outcome.answered and rng.random() < spec.feedback_share:
            reward = rng.choice(REWARDS)
            feedback = {"turn_id": turn_id, "reward": reward}
            first = await post(session, "/v1/feedback", feedback)
            outcome.feedback = FeedbackOutcome(reward, first)
            if first.store_unavailable:  # in the background: the learner goes on meanwhile
                later.append(
                    asyncio.create_task(_feedback_later(session, feedback, outcome, spec, control))
                )
                continue
            if first.retriable:
                outcome.feedback.retries.append(
                    await _retry(session, "/v1/feedback", feedback, first, spec, control)
                )
        outcome.complete = True
        if not outcome.answered:
            await asyncio.sleep(spec.pause_after_failure_s)
    await asyncio.gather(*later)


async def run_clients(
    base_url: str, spec: LoadSpec, control: LoadControl, outcomes: list[TurnOutcome]
) -> None:
    """Run ``spec.clients`` clients until ``control.stopping``; each finishes its last turn."""
    connector = aiohttp.TCPConnector(limit=spec.clients * 2)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *(_client(session, c, spec, control, outcomes) for c in range(spec.clients))
        )
