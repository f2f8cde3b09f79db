"""Closed-loop HTTP load: `clients` concurrent clients, each sending its next request when its
last one returns, for a fixed time.

wrk (C, from Debian's `wrk` package) is used when it is installed: on a 2-core machine the load
generator's own CPU comes out of the server's share, and wrk needs far less of it than a Python
client. Without wrk, an httpx client does the same job; results say which one ran.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

RequestMaker = Callable[[int, int], tuple[str, str, dict]]

# wrk cycles through the bodies; done() prints one JSON line with what the harness needs.
_WRK_SCRIPT = """
local bodies = {}
local n = 0
for line in io.lines("%(bodies)s") do n = n + 1; bodies[n] = line end
local i = 0
wrk.method = "%(method)s"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% n + 1
  if wrk.method == "GET" then return wrk.format(nil, "%(path)s") end
  return wrk.format(nil, "%(path)s", nil, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "seconds": %%f, "errors": %%d, "p50_ms": %%f, "p99_ms": %%f}\\n',
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _summary(
    clients: int, requests: int, seconds: float, errors: int, p50: float, p99: float, generator: str
) -> dict:
    return {
        "clients": clients,
        "requests_per_s": round(requests / seconds, 1),
        "errors": errors,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "n": requests,
        "generator": generator,
    }


def run_wrk(base_url: str, clients: int, seconds: float, make_request: RequestMaker) -> dict:
    method, path, _ = make_request(0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text(
            "\n".join(json.dumps(make_request(i % clients, i)[2]) for i in range(512)) + "\n"
        )
        script = Path(tmp) / "load.lua"
        script.write_text(_WRK_SCRIPT % {"bodies": bodies, "path": path, "method": method})
        completed = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{clients}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "60s",
                "-s",
                str(script),
                base_url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    line = next(x for x in completed.stdout.splitlines() if x.startswith("WRK_RESULT "))
    r = json.loads(line[len("WRK_RESULT ") :])
    return _summary(
        clients, r["requests"], r["seconds"], r["errors"], r["p50_ms"], r["p99_ms"], "wrk"
    )


async def run_httpx(base_url: str, clients: int, seconds: float, make_request: RequestMaker):
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def one_client(index: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < deadline:
                method, path, body = make_request(index, i)
                t0 = time.perf_counter()
                response = await client.request(method, path, json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += response.status_code != 200
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        elapsed = time.perf_counter() - started
    return _summary(
        clients,
        len(latencies),
        elapsed,
        errors,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        "httpx",
    )


def closed_loop(base_url: str, clients: int, seconds: float, make_request: RequestMaker) -> dict:
    if wrk_available():
        return run_wrk(base_url, clients, seconds, make_request)
    return asyncio.run(run_httpx(base_url, clients, seconds, make_request))
