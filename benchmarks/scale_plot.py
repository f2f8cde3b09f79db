"""The PNG of `make bench-scale`: per mode, replicas per deployment and latency over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402


def plot(results: dict, out: Path) -> None:
    modes = results["modes"]
    fig, axes = plt.subplots(2, len(modes), figsize=(6 * len(modes), 7), squeeze=False)
    for column, (mode, result) in enumerate(modes.items()):
        samples = result["samples"]
        t = [s["t"] for s in samples]
        replicas, latency = axes[0][column], axes[1][column]
        names = sorted({name for s in samples for name in s["replicas"]})
        for offset, name in enumerate(names):
            # A small offset per deployment keeps equal counts from hiding each other.
            counts = [s["replicas"].get(name, 0) + 0.03 * offset for s in samples]
            replicas.step(t, counts, where="post", label=name)
        top = max([s["replicas"].get(n, 0) for s in samples for n in names] + [1])
        replicas.set_ylim(0, top + 0.5)
        replicas.set_yticks(range(top + 1))
        replicas.set_title(f"{mode}: running replicas, clients (shaded)")
        replicas.set_ylabel("replicas")
        replicas.legend(fontsize="small", loc="upper right")
        load = replicas.twinx()
        load.fill_between(t, [s["clients"] for s in samples], step="post", alpha=0.1, color="k")
        load.set_ylabel("closed-loop clients")
        p50 = [s["p50_ms"] for s in samples]
        p99 = [s["p99_ms"] for s in samples]
        latency.plot(t, p50, label="p50")
        latency.plot(t, p99, label="p99")
        shed = [s["shed"] for s in samples]
        latency.set_yscale("log")
        if any(shed):
            refused = latency.twinx()
            refused.bar(t, shed, width=1.0, alpha=0.3, color="r")
            refused.set_ylabel("shed per second (red)")
        latency.set_xlabel("seconds")
        latency.set_ylabel("ms (answered turns)")
        latency.legend(fontsize="small", loc="upper right")
        for name, start in result["phase_starts"].items():
            for axis in (replicas, latency):
                axis.axvline(start, color="grey", linewidth=0.5)
            replicas.text(start, 0.05, name, fontsize="x-small", rotation=90)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    import json
    import sys

    source = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/scale.json")
    plot(json.loads(source.read_text()), source.with_suffix(".png"))
