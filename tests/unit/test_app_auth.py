"""build_app decides auth from TUTOR_AUTH and the proxy's bind host, and hands it to the
Ingress (the proxy's host is faked: reading it needs a running Serve)."""

from __future__ import annotations

import pytest

from deployments import app as app_module
from deployments.security.policy import AuthConfigError


def _ingress_auth(monkeypatch, tmp_path, mode: str, host: str | None) -> bool:
    monkeypatch.setenv("TUTOR_AUTH", mode)
    monkeypatch.setattr(app_module, "proxy_host", lambda: host)
    built = app_module.build_app({"store_uri": f"sqlite:///{tmp_path}/tutor.db"})
    return built._bound_deployment.init_kwargs["auth_enabled"]


@pytest.mark.parametrize(
    ("mode", "host", "enabled"),
    [
        ("auto", "127.0.0.1", False),
        ("auto", "0.0.0.0", True),
        ("auto", None, True),
        ("required", "127.0.0.1", True),
        ("off", "::1", False),
    ],
)
def test_the_ingress_gets_the_resolved_auth(monkeypatch, tmp_path, mode, host, enabled):
    assert _ingress_auth(monkeypatch, tmp_path, mode, host) is enabled


def test_auth_off_on_a_public_address_refuses_to_build(monkeypatch, tmp_path):
    with pytest.raises(AuthConfigError, match="0.0.0.0"):
        _ingress_auth(monkeypatch, tmp_path, "off", "0.0.0.0")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_the_emotion_application_gets_the_same_auth_as_the_tutor(monkeypatch, tmp_path, host):
    """/v1/emotion is answered by the emotion application's own ingress: the same decision."""
    tutor = _ingress_auth(monkeypatch, tmp_path, "auto", host)
    built = app_module.build_emotion_app({"store_uri": f"sqlite:///{tmp_path}/tutor.db"})
    assert built._bound_deployment.init_kwargs["auth_enabled"] is tutor is (host == "0.0.0.0")
    monkeypatch.setenv("TUTOR_AUTH", "off")
    if host == "0.0.0.0":
        with pytest.raises(AuthConfigError, match="0.0.0.0"):
            app_module.build_emotion_app({"store_uri": f"sqlite:///{tmp_path}/tutor.db"})
