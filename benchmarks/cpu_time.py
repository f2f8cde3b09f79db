"""The CPU a server spends on a load: every process's CPU time over the measurement, less the
load generator's (this process and the ``wrk`` it waits for).

Divided by the requests answered, it is what one request costs the server side in CPU: HTTP,
proxies, hops, models and Ray's own processes together. Unlike requests/s it does not need
the server to have the cores to itself, so it says *where* two contenders' throughput differs
(a ratio of turns/s at saturation is the inverse ratio of these, when both fill the cores).

Read on a machine running nothing else: other processes' CPU time is counted with the server's.
The split by part (each deployment, HAProxy, Ray's own processes) is ``benchmarks/replica_cpu.py``,
which finds a Serve graph's processes by their titles; this one needs no names, so it measures
the peers (uvicorn, BentoML) the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil


def machine_busy_s() -> float:
    """CPU seconds every core has spent on anything but idling (all processes, the kernel)."""
    t = psutil.cpu_times()
    # Linux counts guest time inside user; iowait and steal are not this machine's work.
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def load_generator_s() -> float:
    """This process's CPU seconds and its waited-for children's (``wrk`` runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class CpuWindow:
    busy_s: float = 0.0
    load_generator_s: float = 0.0
    wall_s: float = 0.0

    @property
    def server_s(self) -> float:
        return max(0.0, self.busy_s - self.load_generator_s)

    def summary(self, requests: int) -> dict:
        """The server side's CPU per request (ms) and the cores it kept busy on average."""
        return {
            "server_cpu_ms_per_request": round(1000 * self.server_s / requests, 2)
            if requests
            else None,
            "server_cores_busy": round(self.server_s / self.wall_s, 2) if self.wall_s else None,
            "load_generator_cpu_s": round(self.load_generator_s, 2),
        }


@contextlib.contextmanager
def cpu_window() -> Iterator[CpuWindow]:
    """The machine's busy CPU and the load generator's over the block (filled in at its end)."""
    window = CpuWindow()
    busy, generator, started = machine_busy_s(), load_generator_s(), time.monotonic()
    try:
        yield window
    finally:
        window.wall_s = time.monotonic() - started
        window.busy_s = machine_busy_s() - busy
        window.load_generator_s = load_generator_s() - generator
