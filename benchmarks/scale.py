"""`make bench-scale`: a step load on the served graph, with autoscaling on and off, and past
capacity, in one run (~9 min on 2 cores).

For each mode the application is started as `make serve` starts it, from `serve_config.yaml`:
- ``fixed``: every deployment at its ``min_replicas`` (autoscaling off): the baseline;
- ``autoscale``: the file as shipped (per-deployment autoscaling);
- ``app_policy`` (``--modes``): the file with the application-level policy of
  ``deployments/autoscaling.py`` in place of the per-deployment one.
Each runs the same steps on `/v1/tutor`: a few clients, then well past one replica's capacity,
then a few again, sampled every second (replicas from Serve's status, answers, latency). After
the steps the last mode is overloaded: open-loop arrivals at 3x the fixed mode's throughput,
then a few clients again, to see shedding and recovery.

Writes ``benchmarks/results/scale.json`` (``samples`` per mode, ``summary``) and ``scale.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import yaml

from benchmarks.replica_cpu import cpu_ms_per_turn, cpu_seconds_by_part
from benchmarks.replica_watch import ReplicaWatcher
from benchmarks.scale_report import (
    per_second_samples,
    phase_summary,
    recovery_seconds,
    scaling_times,
)
from benchmarks.step_load import MESSAGES, Phase, Run, run_phases
from deployments.config import config_deployments
from tests.support.serve_process import (
    DEFAULT_CONFIG,
    dashboard_address,
    free_port,
    serve_running,
    write_config,
)

TURNS_PER_LEARNER = 20  # a fresh learner after this many: histories stay short, turns alike
APP_POLICY = "deployments.autoscaling:graph_policy"


def tutor_turn(client: int, i: int) -> tuple[str, str, dict]:
    return (
        "POST",
        "/v1/tutor",
        {
            "learner_id": f"scale-{client}-{i // TURNS_PER_LEARNER}",
            "message": MESSAGES[i % len(MESSAGES)],
            "answer": {"item_id": str(1366 + i % 50), "skill_id": "9", "correct": i % 3 != 0},
            "candidates": [
                {"item_id": str(2000 + k), "skill_id": s} for k, s in enumerate(("9", "15", "7"))
            ],
        },
    )


def step_phases(low: int, high: int, seconds: dict[str, float]) -> list[Phase]:
    return [
        Phase("low", seconds["low"], clients=low),
        Phase("high", seconds["high"], clients=high),
        Phase("after", seconds["after"], clients=low),
    ]


def mode_config(base: dict, mode: str) -> dict:
    config = copy.deepcopy(base)
    if mode == "fixed":
        for deployment in config_deployments(config).values():
            autoscaling = deployment.pop("autoscaling_config", None)
            if autoscaling:
                deployment["num_replicas"] = autoscaling.get("min_replicas", 1)
    elif mode == "app_policy":  # each application's deployments, by its own policy call
        for app in config["applications"]:
            app["autoscaling_policy"] = {"policy_function": APP_POLICY}
    return config


def minimum_replicas(config: dict) -> dict[str, int]:
    found = {}
    for deployment in config_deployments(config).values():
        autoscaling = deployment.get("autoscaling_config") or {}
        found[deployment["name"]] = autoscaling.get(
            "min_replicas", deployment.get("num_replicas", 1)
        )
    return found


class Sampler:
    """Reads replicas once a second in a thread of its own, beside the load."""

    def __init__(self, watcher: ReplicaWatcher) -> None:
        self._watcher = watcher
        self.readings: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                reading = {"wall": time.time(), **self._watcher.read()}
                reading["cpu"] = cpu_seconds_by_part()
                self.readings.append(reading)
            except Exception as exc:  # e.g. the dashboard busy: a gap, said so
                self.readings.append({"wall": time.time(), "error": repr(exc)})
            self._stop.wait(1.0)


@contextlib.contextmanager
def _client_first():
    """The load generator's thread ahead of the server's processes in the CPU queue (nice -5,
    where allowed): on two busy cores its own lag would otherwise read as server latency. Set
    on this thread only (Linux nice is per thread), after the server was started, so no server
    process inherits it."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -5)
        raised = True
    except OSError:
        raised = False
    try:
        yield
    finally:
        if raised:
            os.setpriority(os.PRIO_PROCESS, 0, 0)


def _run_mode(config_path: Path, log: Path, phases: list[Phase]) -> tuple[Run, list[dict]]:
    port = yaml.safe_load(config_path.read_text())["http_options"]["port"]
    with serve_running(config_path, port=port, log_path=log, timeout_s=300) as base_url:
        watcher = ReplicaWatcher(dashboard_address(log))
        with Sampler(watcher) as sampler, _client_first():
            run = asyncio.run(run_phases(base_url, phases, tutor_turn))
            time.sleep(2)  # one more reading after the last answer
    readings = [{**r, "t": r["wall"] - run.started} for r in sampler.readings]
    return run, readings


def measure_mode(base: dict, mode: str, phases: list[Phase], workdir: Path, store_uri: str) -> dict:
    config = mode_config(base, mode)
    port = free_port()
    source = workdir / f"{mode}.base.yaml"
    source.write_text(yaml.safe_dump(config, sort_keys=False))
    path = write_config(workdir / f"{mode}.yaml", port=port, store_uri=store_uri, base=source)
    run, readings = _run_mode(path, workdir / f"{mode}.log", phases)
    samples = per_second_samples(run.outcomes, readings, phases, run.phase_starts)
    summaries = {p.name: phase_summary(run.outcomes, p) for p in phases}
    result = {
        "mode": mode,
        "phases": summaries,
        "phase_starts": {k: round(v, 1) for k, v in run.phase_starts.items()},
        "samples": samples,
        "skipped_arrivals": run.skipped_arrivals,
        "stage_ms_at_low_load": _stage_ms(run, "low"),
    }
    if "high" in run.phase_starts:
        high_start = run.phase_starts["high"]
        high_end = high_start + next(p.seconds for p in phases if p.name == "high")
        until = run.phase_starts.get("before", float("inf"))
        result["scaling"] = scaling_times(
            samples, high_start, high_end, minimum_replicas(config), until
        )
    if mode == "fixed" and "high" in run.phase_starts:
        result["cpu_per_turn_high_step"] = _cpu_per_turn(run, readings, high_start, high_end)
    if "overload" in run.phase_starts:
        end = run.phase_starts["overload"] + next(p.seconds for p in phases if p.name == "overload")
        result["recovered_after_s"] = recovery_seconds(
            samples, end, normal_per_s=summaries["before"]["ok_per_s"], window=5
        )
    return result


def _cpu_per_turn(run: Run, readings: list[dict], start: float, end: float) -> dict:
    """CPU per turn of each part over the window (replicas constant: the fixed mode)."""
    inside = [r for r in readings if "cpu" in r and start <= r["t"] <= end]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    turns = sum(first["t"] <= o.done < last["t"] and o.ok for o in run.outcomes)
    return {
        "window_s": round(last["t"] - first["t"], 1),
        "turns": turns,
        "parts": cpu_ms_per_turn(first["cpu"], last["cpu"], turns),
    }


def _stage_ms(run: Run, phase: str) -> dict[str, float]:
    """Median time of each stage of the turns answered in ``phase`` (uncontended service)."""
    timings = [o.timings_ms for o in run.outcomes if o.phase == phase and o.timings_ms]
    stages = sorted({k for t in timings for k in t})
    # A stage some turns skip (``reward``: a learner's first turn) is the median of those it has.
    return {k: round(statistics.median(t[k] for t in timings if k in t), 1) for k in stages}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument("--modes", nargs="+", default=["fixed", "autoscale"])
    parser.add_argument("--low-clients", type=int, default=4)
    parser.add_argument("--high-clients", type=int, default=48)
    parser.add_argument("--low-s", type=float, default=20)
    parser.add_argument("--high-s", type=float, default=75)
    parser.add_argument("--after-s", type=float, default=75)
    parser.add_argument("--overload-factor", type=float, default=3.0)
    parser.add_argument("--overload-s", type=float, default=20)
    parser.add_argument("--recovery-s", type=float, default=40)
    parser.add_argument("--no-overload", action="store_true", help="The steps only.")
    parser.add_argument(
        "--capacity",
        type=float,
        help="Turns/s the overload is a multiple of (default: the "
        "fixed mode's high step, measured in this run).",
    )
    args = parser.parse_args(argv)

    base = yaml.safe_load(args.config.read_text())
    seconds = {"low": args.low_s, "high": args.high_s, "after": args.after_s}
    results: dict = {
        "what": __doc__.splitlines()[0],
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
        "config": str(args.config),
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="scale") as tmp:
        workdir = Path(tmp)
        capacity = args.capacity
        for index, mode in enumerate(args.modes):
            phases = step_phases(args.low_clients, args.high_clients, seconds)
            last = index == len(args.modes) - 1
            if last and capacity and not args.no_overload:
                rate = round(args.overload_factor * capacity, 1)
                phases += [
                    Phase("before", 15, clients=args.low_clients),
                    Phase("overload", args.overload_s, rate_per_s=rate),
                    Phase("recovery", args.recovery_s, clients=args.low_clients),
                ]
            store = f"sqlite:///{workdir}/{mode}.db"
            print(f"[bench-scale] {mode}: {[p.load for p in phases]}", flush=True)
            result = measure_mode(base, mode, phases, workdir, store)
            results["modes"][mode] = result
            if mode == "fixed" and not args.capacity:
                capacity = result["phases"]["high"]["ok_per_s"]
            print(json.dumps(result["phases"], indent=1), flush=True)
    results["summary"] = summarise(results["modes"], capacity)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    from benchmarks.scale_plot import plot

    plot(results, args.out.with_suffix(".png"))
    print(json.dumps(results["summary"], indent=1))
    return results


def summarise(modes: dict, capacity: float | None) -> dict:
    summary: dict = {"fixed_high_ok_per_s": capacity}
    for mode, result in modes.items():
        high = result["phases"]["high"]
        summary[mode] = {
            "cpu_per_turn_high_step": result.get("cpu_per_turn_high_step"),
            "high_ok_per_s": high["ok_per_s"],
            "high_p50_ms": high["p50_ms"],
            "high_p99_ms": high["p99_ms"],
            "failed": sum(p["errors"] for p in result["phases"].values()),
            "scaling": result.get("scaling", {}),
        }
        if "overload" in result["phases"]:
            summary[mode]["shedding"] = {
                "before": result["phases"]["before"],
                "overload": result["phases"]["overload"],
                "recovered_after_s": result.get("recovered_after_s"),
            }
        fixed = modes.get("fixed", {}).get("phases", {}).get("high")
        if fixed and mode != "fixed" and fixed["p99_ms"]:
            summary[mode]["high_p99_vs_fixed"] = round(high["p99_ms"] / fixed["p99_ms"], 2)
    return summary


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
