"""`make bench-peers`'s pieces that need no peer venv: the texts, the ratios and the table, and
the naive FastAPI server started as the harness starts it (in the project's venv)."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks.peers import report, texts

needs_data = pytest.mark.skipif(
    not (texts.data_dir() / texts.GOEMOTIONS_TEST).is_file(),
    reason=f"GoEmotions not found under {texts.data_dir()} (set TUTOR_DATA_DIR)",
)


@pytest.mark.data
@needs_data
def test_texts_are_fixed_and_of_learner_length() -> None:
    first, second = texts.benchmark_texts(), texts.benchmark_texts()
    assert first == second and len(first) == texts.DEFAULT_N
    assert set(texts.learner_messages()) <= set(first)  # every learner message is in
    stats = texts.length_stats(first)
    assert stats["words"]["max"] <= texts.MAX_WORDS
    assert texts.MIN_WORDS <= stats["words"]["p50"] <= texts.MAX_WORDS
    assert stats["share_10_to_25_words"] >= 0.75  # mostly; short learner messages are the rest


def _load(rps: float, p50: float) -> dict:
    return {"requests_per_s": rps, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0}


def _results(*, floor: bool = True) -> dict:
    results = {
        "generator": "wrk",
        "texts": {"n": 512},
        "emotion": {
            "raw_2_threads": {"texts_per_s": 200.0, "single_text_p50_ms": 9.0},
            "raw_1_thread": {"texts_per_s": 100.0, "single_text_p50_ms": 12.0},
            "raw_2_threads_onnx": {
                "texts_per_s": 250.0,
                "single_text_p50_ms": 6.0,
                "single_text_after_idle_p50_ms": 7.5,
                "idle_gap_ms": 10,
            },
            "bentoml_onnx": {
                "label": "BentoML (onnx)",
                "1_client": _load(60, 16.0),
                "32_clients": _load(160, 200),
            },
            "bentoml": {
                "label": "BentoML",
                "1_client": _load(50, 20.0),
                "32_clients": _load(120, 250),
            },
            "project": {
                "label": "project",
                "1_client": _load(40, 25.0),
                "32_clients": _load(150, 200),
            },
        },
        "tutor": {
            "project": {"1_client": _load(30, 30.0), "16_clients": _load(80, 200)},
            "monolith": {"1_client": _load(40, 24.0), "16_clients": _load(60, 260)},
        },
    }
    if floor:
        results["tutor"]["floor"] = {"1_client": _load(100, 10.0), "16_clients": _load(200, 80)}
    else:
        results["tutor"]["floor"] = {"label": "floor", "skipped": "not merged"}
    return results


def test_ratios_compare_with_their_goals() -> None:
    by_name = {r["name"]: r for r in report.ratios(_results())}
    vs_bento = by_name["/v1/emotion texts/s at 32 clients vs BentoML's"]
    assert vs_bento["value"] == pytest.approx(1.25, abs=1e-3) and vs_bento["met"] is True
    vs_raw = by_name["/v1/emotion texts/s at 32 clients vs raw in-process, 2 threads"]
    assert vs_raw["value"] == pytest.approx(0.75, abs=1e-3) and vs_raw["met"] is False
    p50 = by_name["/v1/emotion p50 at 1 client vs BentoML's"]
    assert p50["value"] == pytest.approx(1.25, abs=1e-3) and p50["met"] is False  # <= 1.0 goal
    floor_p50 = by_name["/v1/tutor p50 at 1 client vs the no-op graph (floor)"]
    assert floor_p50["value"] == pytest.approx(3.0, abs=1e-3) and floor_p50["met"] is False
    floor_tps = by_name["/v1/tutor turns/s at 16 clients vs the no-op graph (floor)"]
    assert floor_tps["value"] == pytest.approx(0.4, abs=1e-3) and floor_tps["met"] is False
    mono_p50 = by_name["/v1/tutor p50 at 1 client vs the FastAPI monolith"]
    assert mono_p50["value"] == pytest.approx(1.25, abs=1e-3) and mono_p50["met"] is False
    mono_tps = by_name["/v1/tutor turns/s at 16 clients vs the FastAPI monolith"]
    assert mono_tps["value"] == pytest.approx(1.333, abs=1e-3) and mono_tps["met"] is True
    # The same comparisons against the peers on ONNX Runtime; a monolith not run on it: none.
    same = by_name["/v1/emotion texts/s at 32 clients vs BentoML's (peer on ONNX Runtime)"]
    assert same["value"] == pytest.approx(150 / 160, abs=1e-3) and same["met"] is False
    raw_onnx = by_name[
        "/v1/emotion texts/s at 32 clients vs raw in-process, 2 threads (peer on ONNX Runtime)"
    ]
    assert raw_onnx["value"] == pytest.approx(0.6, abs=1e-3)
    assert (
        by_name["/v1/tutor p50 at 1 client vs the FastAPI monolith (peer on ONNX Runtime)"]["met"]
        is None
    )


def test_a_skipped_contender_leaves_its_ratios_unmeasured() -> None:
    rows = report.ratios(_results(floor=False))
    floor_rows = [r for r in rows if "floor" in r["name"]]
    assert floor_rows and all(r["value"] is None and r["met"] is None for r in floor_rows)
    measured = [
        r for r in rows if "floor" not in r["name"] and "monolith (peer on" not in r["name"]
    ]
    assert all(r["met"] is not None for r in measured)


def test_table_shows_every_contender_and_verdict() -> None:
    results = _results(floor=False)
    results["ratios"] = report.ratios(results)
    table = report.table(results)
    for needle in (
        "BentoML",
        "raw in-process, batch 32, 2 threads (torch)",
        "skipped",
        "NOT met",
        "met",
        "6.0 (1 text, no server); 7.5 after 10 ms idle",
    ):
        assert needle in table
    assert "not measured" in table


def test_tutor_bounds_say_what_a_graph_that_added_nothing_would_get() -> None:
    results = _results()  # floor p50 10 ms at 1 client, monolith 24 ms
    for key, ms in (("project", 24.0), ("floor", 9.0), ("monolith", 8.5)):
        results["tutor"][key]["16_clients"]["server_cpu_ms_per_request"] = ms
    assert "monolith" not in report.tutor_bounds(results)  # no HTTP-only figures: no bound
    results["tutor"]["monolith"]["http_only"] = {
        "1_client": _load(500, 2.0),
        "16_clients": {**_load(1000, 10), "server_cpu_ms_per_request": 1.5},
    }
    bounds = report.tutor_bounds(results)
    assert bounds["project_beyond_floor_cpu_ms"] == pytest.approx(15.0)
    monolith = bounds["monolith"]
    assert monolith["work_cpu_ms"] == pytest.approx(7.0)
    assert monolith["floor_plus_work_cpu_ms"] == pytest.approx(16.0)
    assert monolith["turns_per_s_vs_floor_at_monolith_work"] == pytest.approx(9 / 16, abs=1e-3)
    assert monolith["work_p50_ms"] == pytest.approx(22.0)
    assert monolith["p50_vs_floor_at_monolith_work"] == pytest.approx(3.2, abs=1e-3)
    assert monolith["graph_adds_cpu_ms"] == pytest.approx(24.0 - 9.0 - 7.0)
    assert monolith["graph_adds_p50_ms"] == pytest.approx(30.0 - 10.0 - 22.0)  # batching wins
    results["tutor_bounds"] = bounds
    table = report.table(results)
    assert "CPU ms/turn @16" in table and "floor 0.562 at" in table and "floor 3.200 at" in table
    del results["tutor"]["floor"]["16_clients"]["server_cpu_ms_per_request"]
    assert report.tutor_bounds(results) == {}  # a run without the figures says nothing


def test_a_cpu_window_counts_the_load_generators_own_cpu() -> None:
    from benchmarks.cpu_time import cpu_window

    with cpu_window() as cpu:
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:  # this process is the load generator
            pass
    tick = 2 / os.sysconf("SC_CLK_TCK")  # CPU times count in clock ticks (two readings each)
    assert cpu.load_generator_s >= 0.2 - tick
    assert cpu.busy_s >= cpu.load_generator_s - 2 * tick  # the machine saw it too
    summary = cpu.summary(requests=10)
    assert summary["server_cpu_ms_per_request"] >= 0
    assert 0 <= summary["server_cores_busy"] <= (os.cpu_count() or 1)
