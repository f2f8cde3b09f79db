"""Load that changes over time: phases of closed-loop clients or of open-loop arrivals.

- closed loop (``clients``): each client sends its next request when its last one returns, as
  users waiting for their answer do; load never exceeds what is served.
- open loop (``rate_per_s``): requests arrive at a fixed rate whatever happens to them, as a
  crowd does; this is what overloads a service, and what shedding is for.

Every request is recorded (when sent and answered, its status and error code), so any window can
be summarised afterwards. Not wrk: the load changes mid-run and each request's time is needed.
aiohttp rather than httpx: on two cores the client's CPU comes out of the server's share, and
httpx could not keep a 120/s open-loop schedule there (arrivals fell 28 s behind in a 20 s
phase, and its own lag showed up as latency); aiohttp needs several times less CPU a request.
``late_ms`` records how far behind its schedule each open-loop request left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

RequestMaker = Callable[[int, int], tuple[str, str, dict]]
MAX_OUTSTANDING = 2000  # open loop: past this many unanswered requests, arrivals are skipped

# Learner messages of realistic lengths and moods, sent in turn by the load clients.
MESSAGES = [
    "I don't understand why we flip the fraction when dividing.",
    "This is so frustrating, I keep getting the wrong answer!",
    "Oh wait, I think I finally get it now.",
    "Why does the slope tell us how steep the line is?",
    "I'm worried I'll fail the test tomorrow, can you explain it once more?",
    "ok next one",
    "That was actually kind of fun, can we do another?",
    "I give up, I'm just bad at math and nothing you say helps.",
]


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    clients: int = 0
    rate_per_s: float = 0.0

    @property
    def load(self) -> str:
        return f"{self.clients} clients" if self.clients else f"{self.rate_per_s:g}/s open loop"


@dataclass
class Outcome:
    phase: str
    sent: float  # seconds since the run started
    done: float
    status: int  # 0: no HTTP answer (connection dropped, client timeout)
    code: str | None  # the error shape's code, e.g. "overloaded"
    timings_ms: dict[str, float] | None = None  # a tutor turn's stage timings, when answered
    late_ms: float = 0.0  # open loop: how far behind its scheduled time the request left

    @property
    def latency_ms(self) -> float:
        return (self.done - self.sent) * 1000

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def shed(self) -> bool:
        return self.status == 503 and self.code == "overloaded"


@dataclass
class Run:
    started: float  # time.time() at t = 0, to line up with other clocks' readings
    outcomes: list[Outcome]
    phase_starts: dict[str, float]
    skipped_arrivals: int


async def _send(
    session: aiohttp.ClientSession,
    request: tuple[str, str, dict],
    phase: str,
    t0: float,
    scheduled: float | None = None,
) -> Outcome:
    method, path, body = request
    sent = time.perf_counter() - t0
    code, timings = None, None
    try:
        async with session.request(method, path, json=body) as response:
            status = response.status
            payload = await response.json(content_type=None)
        if status == 200:
            timings = payload.get("timings_ms")
        else:
            try:
                code = payload["error"]["code"]
            except (KeyError, TypeError):
                code = "not_the_error_shape"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        status, code = 0, type(exc).__name__
    late = 0.0 if scheduled is None else max(0.0, (sent - scheduled) * 1000)
    return Outcome(phase, sent, time.perf_counter() - t0, status, code, timings, late)


async def run_phases(
    base_url: str,
    phases: list[Phase],
    make_request: RequestMaker,
    *,
    timeout_s: float = 130.0,
) -> Run:
    """Run the phases back to back; requests in flight at a phase's end finish in the next."""
    outcomes: list[Outcome] = []
    starts: dict[str, float] = {}
    skipped = 0
    connector = aiohttp.TCPConnector(limit=MAX_OUTSTANDING)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.time()
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:
        stragglers: set[asyncio.Task] = set()
        counter = 0
        for phase in phases:
            starts[phase.name] = time.perf_counter() - t0
            end = time.perf_counter() + phase.seconds
            if phase.clients:

                async def one_client(index: int, phase: Phase = phase, end: float = end) -> None:
                    nonlocal counter
                    while time.perf_counter() < end:
                        counter += 1
                        request = make_request(index, counter)
                        outcomes.append(await _send(client, request, phase.name, t0))

                clients = [asyncio.create_task(one_client(c)) for c in range(phase.clients)]
                await asyncio.sleep(phase.seconds)
                stragglers.update(clients)  # their last requests finish in the next phase
            else:
                interval = 1.0 / phase.rate_per_s
                next_at = time.perf_counter()
                outstanding: set[asyncio.Task] = set()

                def finished(task: asyncio.Task, outstanding: set = outstanding) -> None:
                    outstanding.discard(task)
                    outcomes.append(task.result())

                while next_at < end:
                    if len(outstanding) < MAX_OUTSTANDING:
                        counter += 1
                        request = make_request(counter, counter)
                        scheduled = next_at - t0
                        task = asyncio.create_task(
                            _send(client, request, phase.name, t0, scheduled)
                        )
                        task.add_done_callback(finished)
                        outstanding.add(task)
                        stragglers.add(task)
                    else:
                        skipped += 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            stragglers = {t for t in stragglers if not t.done()}
        await asyncio.gather(*stragglers)
    outcomes.sort(key=lambda o: o.done)
    return Run(started, outcomes, starts, skipped)
