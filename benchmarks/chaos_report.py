"""What a chaos run shows: per fault, what the clients saw, and which acknowledged writes the
store holds once the fault is over.

An acknowledged write is a turn answered 200 (first attempt or retry) or a feedback answered
200, or 202 with ``queued`` (journaled in the outbox with its turn, applied when the store takes
it): the learner saw it, so the store must hold it. A feedback answered 503 ``store_unavailable``
with Retry-After is an allowed answer, neither acknowledged nor lost: the client sends it again
later (``chaos_load``), and the report counts such feedback apart, with what its later tries got.

The check opens the same store the application uses (``store.open_store``) from outside it,
after the fault, and polls up to a bound, so writes still waiting in an outbox get the time to
drain. Pure functions over the recorded attempts and a store, so the report is tested without a
cluster.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from benchmarks.chaos_load import TurnOutcome, marker
from store import TutorStore

FEEDBACK_FORBIDDEN = ("404", "500")  # a turn's feedback must never be "unknown" nor crash


def missing_writes(store: TutorStore, outcomes: Iterable[TurnOutcome]) -> dict[str, list[str]]:
    """Acknowledged turns the store lacks, and acknowledged feedback it lacks (or holds with
    another reward: a false 200)."""
    turns, feedback = [], []
    for outcome in outcomes:
        if outcome.answered:
            stored = store.get_turn(outcome.turn_id)
            if stored is None or stored.learner_id != outcome.learner_id:
                turns.append(outcome.turn_id)
        if outcome.feedback and outcome.feedback.acknowledged:
            record = store.get_feedback(outcome.turn_id)
            if record is None or not math.isclose(
                record.reward or 0.0, outcome.feedback.reward, abs_tol=1e-9
            ):
                feedback.append(outcome.turn_id)
    return {"turns": turns, "feedback": feedback}


def verify_writes(
    store: TutorStore, outcomes: Sequence[TurnOutcome], *, bound_s: float, poll_s: float = 1.0
) -> dict:
    """Poll until every acknowledged write is stored or ``bound_s`` passed."""
    started = time.monotonic()
    while True:
        missing = missing_writes(store, outcomes)
        waited = time.monotonic() - started
        if not (missing["turns"] or missing["feedback"]) or waited >= bound_s:
            break
        time.sleep(poll_s)
    return {
        "acknowledged_turns": sum(o.answered for o in outcomes),
        "acknowledged_feedback": sum(
            bool(o.feedback and o.feedback.acknowledged) for o in outcomes
        ),
        "lost_turns": len(missing["turns"]),
        "lost_feedback": len(missing["feedback"]),
        "lost_examples": (missing["turns"] + missing["feedback"])[:5],
        "checked_for_s": round(waited, 1),
        "all_stored": not (missing["turns"] or missing["feedback"]),
    }


def stored_markers(store: TutorStore, since: float) -> tuple[Counter, Counter]:
    """How many stored turns carry each harness marker, and how many of them under a turn_id
    other than the marker (a logical turn stored under an id the client never sent)."""
    counts, foreign = Counter(), Counter()
    for turn in store.iter_turns(since=since):
        found = marker(turn.message)
        if found:
            counts[found] += 1
            foreign[found] += turn.turn_id != found
    return counts, foreign


def duplicates(outcomes: Sequence[TurnOutcome], counts: Counter, foreign: Counter) -> dict:
    retried = [o for o in outcomes if o.retry is not None]
    return {
        "duplicate_turns": sum(counts[o.turn_id] > 1 for o in outcomes),
        "stored_under_another_id": sum(foreign[o.turn_id] > 0 for o in outcomes),
        "retried": len(retried),
        "retried_ok_stored_once": sum(o.retry.ok and counts[o.turn_id] == 1 for o in retried),
    }


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


def answers_per_s(outcomes: Sequence[TurnOutcome], start: float, end: float) -> float | None:
    """Turns answered 200 (first attempts and retries) that completed inside [start, end)."""
    done = [
        a.done
        for o in outcomes
        for a in (o.first, o.retry)
        if a is not None and a.ok and start <= a.done < end
    ]
    return _rate(len(done), end - start)


def client_view(outcomes: Sequence[TurnOutcome]) -> dict:
    """Requests, answers and failures of the turns (first attempts) and their feedback."""
    failed = [o for o in outcomes if not o.first.ok]
    feedback = [o.feedback for o in outcomes if o.feedback]
    statuses = Counter(a.label for f in feedback for a in f.attempts)
    degraded_by = Counter(
        reason.split(":")[0] for o in outcomes if o.answer for reason in o.answer.degraded
    )
    return {
        "requests": len(outcomes),
        "ok": sum(o.first.ok for o in outcomes),
        "degraded": sum(bool(o.first.ok and o.first.degraded) for o in outcomes),
        "failed": len(failed),
        "failed_by": dict(Counter(o.first.label for o in failed)),
        "retried": sum(o.retry is not None for o in failed),
        "retried_ok": sum(bool(o.retry and o.retry.ok) for o in failed),
        "not_saved": sum(
            any("not saved" in r for r in o.answer.degraded) for o in outcomes if o.answer
        ),
        "degraded_by": dict(degraded_by),
        "feedback": {
            "sent": len(feedback),
            "acknowledged": sum(f.acknowledged for f in feedback),
            "queued": sum(
                any(a.acknowledges and a.status == 202 for a in f.attempts) for f in feedback
            ),
            "not_acknowledged": sum(not f.acknowledged for f in feedback),
            # 503 store_unavailable at least once; then acknowledged on a later try, or not
            "store_unavailable": sum(f.store_unavailable for f in feedback),
            "store_unavailable_then_acknowledged": sum(
                f.store_unavailable and f.acknowledged for f in feedback
            ),
            "already_recorded": sum(any(a.accepted is False for a in f.attempts) for f in feedback),
            "status": dict(statuses),
            "503_without_retry_after": sum(
                a.status == 503 and not a.retry_after for f in feedback for a in f.attempts
            ),
        },
    }


def goals(kind: str, row: dict) -> dict[str, dict]:
    """The issue's goals for this kind of fault, each with its target and whether it was met."""
    turns, writes, feedback = row["turns"], row["writes"], row["turns"]["feedback"]
    failed_first = turns["failed"]
    found: dict[str, tuple[str, bool]] = {}
    if kind == "replica_kill":
        share = failed_first / turns["requests"] if turns["requests"] else 0.0
        found["failed_share"] = ("<= 0.1% of turns fail", share <= 0.001)
        found["retries_recover"] = (
            "every failed turn succeeds on its retry",
            turns["retried_ok"] == failed_first,
        )
        found["feedback_kept"] = ("0 acknowledged feedback lost", writes["lost_feedback"] == 0)
        found["turns_kept"] = ("0 acknowledged turns lost", writes["lost_turns"] == 0)
    elif kind == "store":
        ratio = row["throughput"]["ratio"]
        found["throughput"] = (">= 0.5x baseline answers/s", ratio is not None and ratio >= 0.5)
        found["turns_kept"] = ("every answered turn stored", writes["lost_turns"] == 0)
    elif kind == "restart":
        found["writes_kept"] = (
            "every acknowledged turn and feedback stored",
            writes["lost_turns"] == 0 and writes["lost_feedback"] == 0,
        )
    # Under every fault: a 200 or a queued 202 is kept; a 503 store_unavailable with Retry-After
    # is allowed (the client sends it again later; counted apart in the row's feedback).
    bad = sum(feedback["status"].get(s, 0) for s in FEEDBACK_FORBIDDEN)
    found["feedback_contract"] = (
        "feedback: no 404, no 500, 503 only with Retry-After, no false 200 or 202",
        bad == 0 and feedback["503_without_retry_after"] == 0 and writes["lost_feedback"] == 0,
    )
    if kind in ("replica_kill", "restart"):
        found["retry_once"] = (
            "a retried turn_id: exactly one stored turn",
            row["duplicates"]["retried_ok_stored_once"] == turns["retried_ok"],
        )
    found["no_duplicates"] = (
        "no turn stored twice",
        row["duplicates"]["duplicate_turns"] == 0
        and row["duplicates"]["stored_under_another_id"] == 0,
    )
    return {name: {"target": target, "met": met} for name, (target, met) in found.items()}


def summarise_run(
    outcomes: Sequence[TurnOutcome],
    *,
    store: TutorStore,
    windows: dict[str, tuple[float, float]],
    records: dict[str, dict],
    verify_s: float,
    since: float,
) -> dict:
    """The baseline, a row per fault (``records``: what each injected, by fault) and the whole
    run; answers/s in each fault's window against the baseline's."""
    done = [o for o in outcomes if o.complete]
    whole = verify_writes(store, done, bound_s=verify_s)
    counts, foreign = stored_markers(store, since=since)
    base_window = windows["baseline"]
    baseline = answers_per_s(done, *base_window)
    rows = []
    for fault, record in records.items():
        mine = [o for o in done if o.phase == fault]
        window = windows[fault]
        rate = answers_per_s(done, *window)
        row = {
            "fault": fault,
            **record,
            "window_s": round(window[1] - window[0], 1),
            "turns": client_view(mine),
            "duplicates": duplicates(mine, counts, foreign),
            "throughput": {
                "answers_per_s": rate,
                "baseline_answers_per_s": baseline,
                "ratio": round(rate / baseline, 2) if rate is not None and baseline else None,
            },
        }
        row["goals"] = goals(record["kind"], row)
        rows.append(row)
    return {
        "baseline": {
            "window_s": round(base_window[1] - base_window[0], 1),
            "answers_per_s": baseline,
            "turns": client_view([o for o in done if o.phase == "baseline"]),
        },
        "faults": rows,
        "whole_run": {
            "turns": client_view(done),
            "writes": whole,
            "duplicates": duplicates(done, counts, foreign),
        },
    }


def markdown_table(rows: Sequence[dict]) -> str:
    header = (
        "| fault | fault window | turns | ok | degraded | failed | retried ok | "
        "acknowledged writes (turns + feedback) | feedback 202 queued | "
        "feedback 503 store_unavailable (acknowledged later) | lost writes | duplicate turns | "
        "answers/s vs baseline | goals |"
    )
    lines = [header, _separator(header)]
    for row in rows:
        turns, writes = row["turns"], row["writes"]
        feedback = turns["feedback"]
        ratio = row["throughput"]["ratio"]
        unmet = [name for name, goal in row.get("goals", {}).items() if not goal["met"]]
        lines.append(
            f"| {row['fault']} | {row['window']} | {turns['requests']} | {turns['ok']} | "
            f"{turns['degraded']} | {turns['failed']} | {turns['retried_ok']} | "
            f"{writes['acknowledged_turns']} + {writes['acknowledged_feedback']} | "
            f"{feedback.get('queued', 0)} | "
            f"{feedback.get('store_unavailable', 0)} "
            f"({feedback.get('store_unavailable_then_acknowledged', 0)}) | "
            f"{writes['lost_turns'] + writes['lost_feedback']} | "
            f"{row['duplicates']['duplicate_turns']} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | "
            f"{'met' if not unmet else 'NOT met: ' + ', '.join(unmet)} |"
        )
    return "\n".join(lines) + "\n"


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)
