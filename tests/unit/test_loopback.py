"""deployments/loopback.py against the pinned Ray: what it rewrites is still there, it rewrites
only that, and on a node with a routable address it leaves Ray alone. The sockets themselves
are checked on a running app by tests/integration/test_api.py
(test_every_socket_of_the_app_binds_loopback)."""

from __future__ import annotations

import pytest
from ray.serve._private import haproxy, replica

from deployments import loopback


@pytest.fixture
def restored(monkeypatch):
    """Whatever a test rewrites in Ray's modules is put back after it."""
    monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", haproxy.HAPROXY_CONFIG_TEMPLATE)
    monkeypatch.setattr(replica, "add_port_to_grpc_server", replica.add_port_to_grpc_server)
    return monkeypatch


def _bind_lines(template: str) -> list[str]:
    return [line.strip() for line in template.splitlines() if line.strip().startswith("bind ")]


def test_the_haproxy_stats_and_metrics_listeners_move_to_the_host_and_nothing_else_does():
    before = haproxy.HAPROXY_CONFIG_TEMPLATE
    after = loopback.loopback_haproxy_template(before, "127.0.0.1")
    assert "bind 127.0.0.1:{{ config.stats_port }}" in _bind_lines(after)
    assert "bind 127.0.0.1:{{ config.metrics_port }}" in _bind_lines(after)
    # The frontends (the API on http_options.host) keep their binds; only two lines differ.
    assert len(before.splitlines()) == len(after.splitlines())
    pairs = zip(before.splitlines(), after.splitlines(), strict=True)
    assert len([(a, b) for a, b in pairs if a != b]) == 2
    assert loopback.loopback_haproxy_template(after, "127.0.0.1") == after


def test_an_ipv6_loopback_host_is_bracketed(restored):
    restored.setattr(loopback.ray.util, "get_node_ip_address", lambda: "::1")
    loopback.bind_serve_to_loopback()
    assert "bind [::1]:{{ config.stats_port }}" in _bind_lines(haproxy.HAPROXY_CONFIG_TEMPLATE)


def test_a_template_without_the_expected_bind_is_refused():
    with pytest.raises(loopback.RayChangedError, match="metrics_port"):
        loopback.loopback_haproxy_template("listen stats\n  bind *:{{ config.stats_port }}", "x")


def test_replica_grpc_servers_bind_the_loopback_host(restored):
    calls = []
    restored.setattr(replica, "add_port_to_grpc_server", lambda server, a: calls.append(a) or 1)
    restored.setattr(loopback.ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    loopback.bind_serve_to_loopback()
    loopback.bind_serve_to_loopback()  # the hook twice in one process: wrapped once
    replica.add_port_to_grpc_server(object(), "[::]:0")
    replica.add_port_to_grpc_server(object(), "10.0.0.7:5000")  # an explicit host stays
    assert calls == ["127.0.0.1:0", "10.0.0.7:5000"]


def test_on_a_routable_node_ray_is_left_as_it_is(restored):
    template, add_port = haproxy.HAPROXY_CONFIG_TEMPLATE, replica.add_port_to_grpc_server
    restored.setattr(loopback.ray.util, "get_node_ip_address", lambda: "10.0.0.5")
    loopback.bind_serve_to_loopback()
    assert template == haproxy.HAPROXY_CONFIG_TEMPLATE
    assert replica.add_port_to_grpc_server is add_port
