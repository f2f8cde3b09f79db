"""The issue's ratios (computed from one run's figures, each with its goal) and the table."""

from __future__ import annotations

import operator

# (name, numerator path, denominator path, comparison, goal). A path is a tuple of keys into
# the results; a missing figure (a contender skipped) makes the ratio "not measured".
GOALS: list[tuple[str, tuple, tuple, str, float]] = [
    (
        "/v1/emotion texts/s at 32 clients vs BentoML's",
        ("emotion", "project", "32_clients", "requests_per_s"),
        ("emotion", "bentoml", "32_clients", "requests_per_s"),
        ">=",
        1.2,
    ),
    (
        "/v1/emotion texts/s at 32 clients vs raw in-process, 2 threads",
        ("emotion", "project", "32_clients", "requests_per_s"),
        ("emotion", "raw_2_threads", "texts_per_s"),
        ">=",
        0.8,
    ),
    (
        "/v1/emotion p50 at 1 client vs BentoML's",
        ("emotion", "project", "1_client", "p50_ms"),
        ("emotion", "bentoml", "1_client", "p50_ms"),
        "<=",
        1.0,
    ),
    (
        "/v1/tutor p50 at 1 client vs the no-op graph (floor)",
        ("tutor", "project", "1_client", "p50_ms"),
        ("tutor", "floor", "1_client", "p50_ms"),
        "<=",
        2.2,
    ),
    (
        "/v1/tutor turns/s at 16 clients vs the no-op graph (floor)",
        ("tutor", "project", "16_clients", "requests_per_s"),
        ("tutor", "floor", "16_clients", "requests_per_s"),
        ">=",
        0.5,
    ),
    (
        "/v1/tutor p50 at 1 client vs the FastAPI monolith",
        ("tutor", "project", "1_client", "p50_ms"),
        ("tutor", "monolith", "1_client", "p50_ms"),
        "<=",
        1.2,
    ),
    (
        "/v1/tutor turns/s at 16 clients vs the FastAPI monolith",
        ("tutor", "project", "16_clients", "requests_per_s"),
        ("tutor", "monolith", "16_clients", "requests_per_s"),
        ">=",
        1.2,
    ),
]
# The same comparisons with the peers on ONNX Runtime, the project's emotion runtime: the issue's
# goals are against BentoML and a monolith as a user writes them (torch); these say how much of
# the lead is the runtime and how much the serving path (compare like with like).
SAME_RUNTIME_GOALS: list[tuple[str, tuple, tuple, str, float]] = [
    (
        f"{name} (peer on ONNX Runtime)",
        num,
        tuple(
            f"{key}_onnx" if key in ("bentoml", "raw_2_threads", "monolith") else key for key in den
        ),
        op,
        goal,
    )
    for name, num, den, op, goal in GOALS
    if den[1] in ("bentoml", "raw_2_threads", "monolith")
]
_COMPARE = {">=": operator.ge, "<=": operator.le}


def _get(results: dict, path: tuple):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def ratios(results: dict) -> list[dict]:
    rows = []
    for name, num_path, den_path, op, goal in GOALS + SAME_RUNTIME_GOALS:
        num, den = _get(results, num_path), _get(results, den_path)
        row = {"name": name, "goal": f"{op} {goal}"}
        if num is None or den is None or den == 0:
            row.update(value=None, met=None, note="not measured")
        else:
            value = round(num / den, 3)
            row.update(value=value, met=bool(_COMPARE[op](value, goal)), num=num, den=den)
        rows.append(row)
    return rows


CPU_AT = "16_clients"  # the tutor's load with the cores full: CPU a turn is what bounds turns/s


def _server_cpu_ms(contender: dict | None) -> float | None:
    return _get(contender or {}, (CPU_AT, "server_cpu_ms_per_request"))


def tutor_bounds(results: dict) -> dict:
    """What the floor goals leave for the turn's work, from the CPU a turn at 16 clients and the
    p50 at 1 client.

    The floor spends its CPU and its latency on Serve's hops around no work. The monolith's turn
    less its HTTP-only twin (the same requests answered with no work, in the same process) is
    the turn's work alone, as one process does it: models, store, tutoring logic. A graph of the
    floor's shape that added that work and nothing else would spend their sum: with the cores
    full, turns/s ``floor / (floor + work)`` of the floor's, and a p50 ``(floor + work) / floor``
    of the floor's. Not a hard limit: a graph can do the work for less than the monolith does
    (the Emotion replicas batch concurrent turns' texts; the monolith runs one at a time).
    """
    tutor = results.get("tutor", {})
    project, floor = _server_cpu_ms(tutor.get("project")), _server_cpu_ms(tutor.get("floor"))
    if project is None or floor is None:
        return {}
    floor_p50 = _get(tutor, ("floor", "1_client", "p50_ms"))
    project_p50 = _get(tutor, ("project", "1_client", "p50_ms"))
    out: dict = {
        "project_cpu_ms": project,
        "floor_cpu_ms": floor,
        "project_beyond_floor_cpu_ms": round(project - floor, 2),
    }
    for key in sorted(k for k in tutor if k.startswith("monolith")):
        monolith, http_only = tutor[key], tutor[key].get("http_only") or {}
        turn_cpu, http_cpu = _server_cpu_ms(monolith), _server_cpu_ms(http_only)
        if turn_cpu is None or http_cpu is None:
            continue
        work_cpu = round(turn_cpu - http_cpu, 2)
        bounds = {
            "turn_cpu_ms": turn_cpu,
            "http_only_cpu_ms": http_cpu,
            "work_cpu_ms": work_cpu,
            "floor_plus_work_cpu_ms": round(floor + work_cpu, 2),
            "turns_per_s_vs_floor_at_monolith_work": round(floor / (floor + work_cpu), 3),
            # What the graph itself adds a turn to its hops and the work (the serving path's
            # own cost; negative where the graph does the work for less: its batching, or a
            # faster runtime than that monolith's).
            "graph_adds_cpu_ms": round(project - floor - work_cpu, 2),
        }
        turn_p50 = _get(monolith, ("1_client", "p50_ms"))
        http_p50 = _get(http_only, ("1_client", "p50_ms"))
        if floor_p50 and turn_p50 is not None and http_p50 is not None:
            work_p50 = round(turn_p50 - http_p50, 2)
            bounds |= {
                "work_p50_ms": work_p50,
                "p50_vs_floor_at_monolith_work": round((floor_p50 + work_p50) / floor_p50, 3),
            }
            if project_p50 is not None:
                bounds["graph_adds_p50_ms"] = round(project_p50 - floor_p50 - work_p50, 2)
        out[key] = bounds
    return out


def tutor_bound_lines(bounds: dict) -> list[str]:
    if not bounds:
        return []
    lines = [
        "",
        "server CPU a turn at 16 clients (every process but the load generator), ms: this "
        f"project {bounds['project_cpu_ms']}, the floor {bounds['floor_cpu_ms']} (the project "
        f"beyond it: {bounds['project_beyond_floor_cpu_ms']})",
    ]
    for key, m in sorted((k, v) for k, v in bounds.items() if k.startswith("monolith")):
        lines.append(
            f"  {key}: {m['turn_cpu_ms']} a turn, {m['http_only_cpu_ms']} answering with no "
            f"work: the turn's work {m['work_cpu_ms']}; the floor's hops plus that work "
            f"{m['floor_plus_work_cpu_ms']}: turns/s vs the floor "
            f"{m['turns_per_s_vs_floor_at_monolith_work']:.3f} at that cost; this project adds "
            f"{m['graph_adds_cpu_ms']} to them"
        )
        if "work_p50_ms" in m:
            lines.append(
                f"  {key}: the work's p50 at 1 client {m['work_p50_ms']} ms: p50 vs the floor "
                f"{m['p50_vs_floor_at_monolith_work']:.3f} at that cost; this project adds "
                f"{m.get('graph_adds_p50_ms', '-')} ms to them"
            )
    return lines


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def _load_cells(row: dict | None) -> tuple[str, str, str]:
    if not row:
        return ("-", "-", "-")
    errors = f", {row['errors']} errors" if row.get("errors") else ""
    if "load_average_1m" in row:
        errors += f", load {row['load_average_1m']}"
    return (f"{row['requests_per_s']}", f"{row['p50_ms']} / {row['p99_ms']}", errors)


def _format(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    rule = "-+-".join("-" * w for w in widths)
    return [line(header).rstrip(), rule, *(line(r).rstrip() for r in rows)]


def emotion_rows(emotion: dict) -> list[list[str]]:
    limit = (emotion.get("raw_2_threads") or {}).get("texts_per_s")

    def of_limit(texts_per_s: float) -> str:
        return f"{texts_per_s / limit:.2f}" if limit else "-"

    rows = []
    for key, raw in emotion.items():
        if key.startswith("raw_"):
            threads = "2 threads" if key.startswith("raw_2") else "1 thread"
            runtime = "onnx" if key.endswith("_onnx") else "torch"
            label = f"raw in-process, batch 32, {threads} ({runtime})"
            tps = raw["texts_per_s"]
            p50 = f"{raw['single_text_p50_ms']} (1 text, no server)"
            if "single_text_after_idle_p50_ms" in raw:
                idle = raw["single_text_after_idle_p50_ms"]
                p50 += f"; {idle} after {raw['idle_gap_ms']} ms idle"
            load = f"load {raw['load_average_1m']}" if "load_average_1m" in raw else ""
            rows.append([label, f"{tps}", of_limit(tps), "", p50, load])
    for key, contender in emotion.items():
        served = isinstance(contender, dict) and ("1_client" in contender or "skipped" in contender)
        if key.startswith("raw_") or not served:
            continue
        label = contender.get("label", key)
        if "skipped" in contender:
            rows.append([label, "skipped", "", "", "", contender["skipped"]])
            continue
        t32, l32, e32 = _load_cells(contender.get("32_clients"))
        _, l1, e1 = _load_cells(contender.get("1_client"))
        ratio = of_limit(float(t32)) if t32 != "-" else "-"
        rows.append([label, t32, ratio, l32, l1, (e32 + e1).lstrip(", ")])
    return rows


def tutor_rows(tutor: dict) -> list[list[str]]:
    rows = []
    for key, contender in tutor.items():
        label = contender.get("label", key)
        if "skipped" in contender:
            rows.append([label, "skipped", "", "", "", contender["skipped"]])
            continue
        t16, l16, e16 = _load_cells(contender.get("16_clients"))
        t1, l1, e1 = _load_cells(contender.get("1_client"))
        cpu = _server_cpu_ms(contender)
        cpu_cell = "-" if cpu is None else f"{cpu}"
        rows.append([label, t16, l16, cpu_cell, l1, (e16 + e1).lstrip(", ")])
    return rows


def table(results: dict) -> str:
    n_texts = results.get("texts", {}).get("n", "?")
    lines = [f"load generator: {results.get('generator', '?')}; texts: {n_texts}"]
    version = results.get("emotion_version", "?")
    if results.get("emotion_int8"):
        version += (
            " (int8 on ONNX Runtime: the project and the onnx peers; torch: its fp32 weights)"
        )
    lines += ["", f"emotion {version}, one text per request"]
    lines += _format(
        [
            "contender",
            "texts/s @32",
            "of raw 2t torch",
            "p50/p99 ms @32",
            "p50/p99 ms @1",
            "note (errors, 1-min load @32, @1)",
        ],
        emotion_rows(results.get("emotion", {})),
    )
    lines += ["", "tutor turn (offline responder)"]
    lines += _format(
        [
            "contender",
            "turns/s @16",
            "p50/p99 ms @16",
            "CPU ms/turn @16",
            "p50/p99 ms @1",
            "note (errors, 1-min load @16, @1)",
        ],
        tutor_rows(results.get("tutor", {})),
    )
    lines += tutor_bound_lines(results.get("tutor_bounds", {}))
    lines += ["", "goals (ratios in this run)"]
    lines += _format(
        ["ratio", "value", "goal", "verdict"],
        [
            [
                r["name"],
                "-" if r["value"] is None else f"{r['value']:.3f}",
                r["goal"],
                _verdict(r["met"]),
            ]
            for r in results.get("ratios", [])
        ],
    )
    return "\n".join(lines)
