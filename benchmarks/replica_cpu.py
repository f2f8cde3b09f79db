"""CPU time of the served graph's processes, by part: each deployment's replicas, HAProxy, Ray's
own processes and the load generator. Read at two moments, the difference divided by the turns
answered in between is each part's CPU per turn: what a replica would serve with a core of its
own, the figure a cluster with more cores is sized from.

Processes are found by the titles Ray gives them (``ray::SERVE_REPLICA::tutor#Emotion#...``,
``ray::ServeReplica:emotion:Emotion``). Read it on a machine running one tutor: another
Ray's processes would be counted with these. A replica that exits between two readings takes
its CPU time with it, so only a window with constant replicas gives a fair difference.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

import psutil

_DEPLOYMENT = re.compile(
    r"(?:tutor|emotion)[#:](Ingress|Emotion|Difficulty|Personalization|LLMRouter|LocalLM)\b"
)


def _part(cmdline: str, pid: int) -> str | None:
    found = _DEPLOYMENT.search(cmdline)
    if found:
        return found.group(1)
    if pid == os.getpid():
        return "load generator"
    if "haproxy" in cmdline:
        return "HAProxy"
    if cmdline.startswith("ray::") or "/site-packages/ray/" in cmdline:
        return "Ray (controller, proxy manager, raylet, GCS, agents)"
    return None


def cpu_seconds_by_part() -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            times = process.info["cpu_times"]
        except (psutil.Error, TypeError):
            continue
        part = _part(cmdline, process.pid)
        if part and times is not None:
            totals[part] += times.user + times.system
    return dict(totals)


def cpu_ms_per_turn(before: dict[str, float], after: dict[str, float], turns: int) -> dict:
    """Each part's CPU milliseconds per turn between two readings, and with one core per
    replica, the turns/s one replica of it could serve."""
    parts = {}
    for part in sorted(set(before) | set(after)):
        used = after.get(part, 0.0) - before.get(part, 0.0)
        if turns and used > 0:
            per_turn = 1000 * used / turns
            parts[part] = {
                "cpu_ms_per_turn": round(per_turn, 1),
                "turns_per_s_per_core": round(1000 / per_turn, 1),
            }
    return parts
