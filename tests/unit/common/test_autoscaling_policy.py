"""The application-level policy: stages scaled together from the Ingress's turns in flight."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from deployments.autoscaling import graph_policy


@dataclass
class Config:
    target: float

    def get_target_ongoing_requests(self) -> float:
        return self.target


@dataclass
class Context:
    deployment_name: str
    total_num_requests: float
    config: Config
    policy_state: dict = field(default_factory=dict)


def _contexts(turns: float, emotion: float, shares: dict | None = None) -> dict:
    shares = shares or {}
    return {
        "ingress-id": Context("Ingress", turns, Config(32)),
        "emotion-id": Context("Emotion", emotion, Config(4), dict(shares.get("Emotion", {}))),
    }


def test_in_a_steady_state_each_stage_gets_what_its_own_queue_asks():
    desired, state = graph_policy(_contexts(turns=16, emotion=4))
    assert desired["ingress-id"] == pytest.approx(16 / 32)
    assert desired["emotion-id"] == pytest.approx(1.0)  # 4 / 4, and 16 x 0.25 / 4
    assert state["emotion-id"]["share"] == pytest.approx(0.25)


def test_a_burst_at_the_ingress_scales_the_stage_before_its_own_queue_grows():
    learnt = {"Emotion": {"share": 0.25}}
    # 64 turns arrive; Emotion still sees its old load (the burst waits at the ingress).
    desired, state = graph_policy(_contexts(turns=64, emotion=4, shares=learnt))
    assert desired["emotion-id"] == pytest.approx(64 * (0.2 * 4 / 64 + 0.8 * 0.25) / 4)
    assert desired["emotion-id"] > 3  # where Serve's per-deployment policy would say 1
    assert 0.2 < state["emotion-id"]["share"] < 0.25


def test_idle_graph_keeps_what_it_learnt_and_asks_for_nothing():
    desired, state = graph_policy(_contexts(turns=0, emotion=0, shares={"Emotion": {"share": 0.3}}))
    assert desired["emotion-id"] == 0
    assert state["emotion-id"]["share"] == pytest.approx(0.3)
