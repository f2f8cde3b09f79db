"""Token auth for the command's own client, the way Ray enables it for a local cluster."""

from __future__ import annotations

import pytest

from deployments.cli import serve_client


@pytest.fixture
def ray_switch(monkeypatch):
    """Ray's own switch, replaced so the test process's environment stays as it is."""
    from ray._private.authentication import authentication_token_setup as token_setup

    calls = []

    def fake(warn_if_disabled=True):
        calls.append(warn_if_disabled)
        return True

    monkeypatch.setattr(token_setup, "maybe_enable_token_auth_if_token_available", fake)
    return calls


def test_a_local_dashboard_uses_rays_switch(monkeypatch, ray_switch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert serve_client.enable_local_token_auth("http://127.0.0.1:8265")
    assert serve_client.enable_local_token_auth("http://localhost:8265")
    assert ray_switch == [False, False]


def test_a_remote_dashboard_never_gets_the_local_token(monkeypatch, ray_switch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert not serve_client.enable_local_token_auth("http://head.example.com:8265")
    assert ray_switch == []


@pytest.mark.parametrize(("mode", "enabled"), [("token", True), ("disabled", False)])
def test_an_explicit_mode_is_respected(monkeypatch, ray_switch, mode, enabled):
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    assert serve_client.enable_local_token_auth("http://127.0.0.1:8265") is enabled
    assert ray_switch == []


def test_the_address_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_DASHBOARD_ADDRESS", "http://10.0.0.5:8265")
    assert serve_client.default_address() == "http://10.0.0.5:8265"
    monkeypatch.delenv("RAY_DASHBOARD_ADDRESS")
    assert serve_client.default_address() == "http://127.0.0.1:8265"
