"""The step-load summary: per-second samples, scaling times and recovery, from known records."""

from __future__ import annotations

import pytest

from benchmarks.scale import minimum_replicas, mode_config
from benchmarks.scale_report import (
    per_second_samples,
    phase_summary,
    recovery_seconds,
    scaling_times,
)
from benchmarks.step_load import Outcome, Phase

PHASES = [Phase("low", 2, clients=1), Phase("high", 3, clients=8), Phase("after", 3, clients=1)]
STARTS = {"low": 0.0, "high": 2.0, "after": 5.0}


def _reading(t: float, emotion: int) -> dict:
    return {"t": t, "running": {"Emotion": emotion}, "target": {"Emotion": emotion}}


def test_samples_count_answers_by_the_second_they_came_back():
    outcomes = [
        Outcome("low", 0.1, 0.3, 200, None),
        Outcome("high", 2.1, 2.9, 200, None),
        Outcome("high", 2.2, 2.25, 503, "overloaded"),
        Outcome("high", 2.3, 2.6, 500, "internal_error"),
    ]
    readings = [_reading(0.5, 1), _reading(2.5, 2)]
    samples = per_second_samples(outcomes, readings, PHASES, STARTS)
    assert [s["ok"] for s in samples] == [1, 0, 1]
    second = samples[2]
    assert (second["phase"], second["clients"], second["shed"], second["errors"]) == (
        "high",
        8,
        1,
        1,
    )
    assert second["replicas"] == {"Emotion": 2} and samples[0]["replicas"] == {"Emotion": 1}
    assert second["p50_ms"] == pytest.approx(800, abs=1)


def test_a_phase_summary_separates_shed_requests_from_failures():
    outcomes = [Outcome("high", 0, 0.5, 200, None)] * 6 + [
        Outcome("high", 0, 0.01, 503, "overloaded")
    ]
    summary = phase_summary(outcomes, PHASES[1])
    assert (summary["ok"], summary["ok_per_s"], summary["shed"], summary["errors"]) == (
        6,
        2.0,
        1,
        0,
    )
    assert summary["shed_p99_ms"] == pytest.approx(10)


def test_scaling_times_are_measured_from_the_steps_edges():
    replicas = [1, 1, 1, 1, 2, 2, 2, 2, 1, 1]  # a second replica 2 s into the step, gone 1 s after
    samples = [{"t": t, "replicas": {"Emotion": n, "Ingress": 1}} for t, n in enumerate(replicas)]
    times = scaling_times(samples, step_start=2, step_end=7, minimum={"Emotion": 1, "Ingress": 1})
    assert times == {
        "Emotion": {"max_replicas_seen": 2, "rose_after_s": 2, "back_to_min_after_s": 1}
    }


def test_recovery_is_when_throughput_is_back_near_normal():
    samples = [{"t": t, "ok": n} for t, n in enumerate([0, 1, 5, 9, 10, 10, 10])]
    assert recovery_seconds(samples, since=1, normal_per_s=10) == 2  # 9+10+10 >= 27
    assert recovery_seconds(samples, since=1, normal_per_s=50) is None


def test_the_fixed_mode_pins_every_deployment_to_its_minimum():
    base = {
        "applications": [
            {
                "deployments": [
                    {
                        "name": "Emotion",
                        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2},
                    }
                ]
            }
        ]
    }
    fixed = mode_config(base, "fixed")
    assert fixed["applications"][0]["deployments"][0] == {"name": "Emotion", "num_replicas": 1}
    assert minimum_replicas(fixed) == {"Emotion": 1} == minimum_replicas(base)
    policy = mode_config(base, "app_policy")["applications"][0]["autoscaling_policy"]
    assert policy["policy_function"] == "deployments.autoscaling:graph_policy"


def test_cpu_per_turn_is_each_parts_cpu_between_readings_over_the_turns():
    from benchmarks.replica_cpu import _part, cpu_ms_per_turn

    parts = cpu_ms_per_turn(
        {"Emotion": 10.0, "Ingress": 2.0}, {"Emotion": 12.0, "Ingress": 2.5}, 100
    )
    assert parts["Emotion"] == {"cpu_ms_per_turn": 20.0, "turns_per_s_per_core": 50.0}
    assert parts["Ingress"]["cpu_ms_per_turn"] == pytest.approx(5.0)
    assert (
        _part("ray::SERVE_REPLICA::tutor#Emotion#abc:ServeReplica:tutor:Emotion.x", 1) == "Emotion"
    )
    assert _part("ray::ServeReplica:tutor:LLMRouter", 1) == "LLMRouter"
    assert _part("/usr/bin/vim notes.txt", 1) is None
