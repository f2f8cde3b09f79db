"""What a step-load run shows: per-second samples, and the figures the issue asks about.

Pure functions over the recorded requests (``step_load.Outcome``) and Serve's replica readings,
so the summary is tested without a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from benchmarks.step_load import Outcome, Phase

Reading = dict  # {"t": seconds since the run started, "running": {...}, "target": {...}}


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def per_second_samples(
    outcomes: Sequence[Outcome],
    readings: Sequence[Reading],
    phases: Sequence[Phase],
    phase_starts: dict[str, float],
) -> list[dict]:
    """One sample a second: load, replicas (the last reading by then), answers completed in
    that second (ok, shed, errors) and their latency."""
    end = max([o.done for o in outcomes] + [r["t"] for r in readings] + [0.0])
    samples = []
    reading_index = 0
    last_reading: Reading | None = None
    for second in range(math.ceil(end)):
        while reading_index < len(readings) and readings[reading_index]["t"] <= second + 1:
            if "running" in readings[reading_index]:
                last_reading = readings[reading_index]
            reading_index += 1
        done = [o for o in outcomes if second <= o.done < second + 1]
        ok = [o.latency_ms for o in done if o.ok]
        phase = _phase_at(second + 0.5, phases, phase_starts)
        samples.append(
            {
                "t": second,
                "phase": phase.name if phase else None,
                "clients": phase.clients if phase else 0,
                "rate_per_s": phase.rate_per_s if phase else 0.0,
                "replicas": dict(last_reading["running"]) if last_reading else {},
                "target_replicas": dict(last_reading["target"]) if last_reading else {},
                "ok": len(ok),
                "shed": sum(o.shed for o in done),
                "errors": sum(not o.ok and not o.shed for o in done),
                "p50_ms": _pct(ok, 50),
                "p99_ms": _pct(ok, 99),
            }
        )
    return samples


def _phase_at(t: float, phases: Sequence[Phase], starts: dict[str, float]) -> Phase | None:
    current = None
    for phase in phases:
        start = starts.get(phase.name)
        if start is not None and start <= t < start + phase.seconds:
            current = phase
    return current


def phase_summary(outcomes: Sequence[Outcome], phase: Phase) -> dict:
    """Throughput and latency of the requests a phase sent (answered in it or just after)."""
    sent = [o for o in outcomes if o.phase == phase.name]
    ok = [o.latency_ms for o in sent if o.ok]
    shed = [o.latency_ms for o in sent if o.shed]
    return {
        "phase": phase.name,
        "load": phase.load,
        "seconds": phase.seconds,
        "ok_per_s": round(len(ok) / phase.seconds, 1),
        "ok": len(ok),
        "shed": len(shed),
        "errors": sum(not o.ok and not o.shed for o in sent),
        "error_codes": sorted({f"{o.status} {o.code}" for o in sent if not o.ok and not o.shed}),
        "p50_ms": _pct(ok, 50),
        "p99_ms": _pct(ok, 99),
        "shed_p50_ms": _pct(shed, 50),
        "shed_p99_ms": _pct(shed, 99),
        "shed_within_100ms": round(sum(ms <= 100 for ms in shed) / len(shed), 3) if shed else None,
        # Open loop: how far behind schedule the client sent (its own lag, not the server's).
        "client_late_p99_ms": _pct([o.late_ms for o in sent], 99) if phase.rate_per_s else None,
    }


def scaling_times(
    samples: Sequence[dict],
    step_start: float,
    step_end: float,
    minimum: dict[str, int],
    until: float = math.inf,
) -> dict[str, dict]:
    """Per deployment that scaled: seconds from the step's start until a replica beyond the
    minimum was running, and from the step's end until only the minimum was running (for good,
    up to ``until``)."""
    samples = [s for s in samples if s["t"] < until]
    times: dict[str, dict] = {}
    for name, low in minimum.items():
        above = [s["t"] for s in samples if s["replicas"].get(name, 0) > low]
        if not above:
            continue
        rose = next((t for t in above if t >= step_start), None)
        back = next(
            (
                s["t"]
                for s in samples
                if s["t"] >= step_end
                and s["replicas"].get(name, 0) <= low
                and all(x["replicas"].get(name, 0) <= low for x in samples if x["t"] >= s["t"])
            ),
            None,
        )
        times[name] = {
            "max_replicas_seen": max(s["replicas"].get(name, 0) for s in samples),
            "rose_after_s": None if rose is None else round(rose - step_start, 1),
            "back_to_min_after_s": None if back is None else round(back - step_end, 1),
        }
    return times


def recovery_seconds(
    samples: Sequence[dict], since: float, normal_per_s: float, window: int = 3
) -> float | None:
    """Seconds after ``since`` until answers per second (a ``window``-second mean) are back to
    90% of ``normal_per_s``; None if they never are."""
    after = [s for s in samples if s["t"] >= since]
    for i in range(len(after) - window + 1):
        mean = sum(s["ok"] for s in after[i : i + window]) / window
        if mean >= 0.9 * normal_per_s:
            return round(after[i]["t"] - since, 1)
    return None
