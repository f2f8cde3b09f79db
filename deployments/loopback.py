"""On one machine, Serve's own listeners bind loopback like the rest of Ray.

`make serve` (and tests/support/serve_process.py) start Ray with this node's address on
loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray's single-machine mode), which puts the GCS,
the raylet, every worker's gRPC server, the dashboard and its agents on 127.0.0.1. Three
listeners of Ray Serve 2.60 do not follow the node's address, whatever the settings:

- HAProxy's stats page (`listen stats`, `bind *:8404`) and its Prometheus frontend
  (`bind :9101`): the config template binds every interface;
- each replica's inter-deployment gRPC server (the throughput-optimised data plane), which
  binds `[::]:0`.

`bind_serve_to_loopback` is Ray's `worker_process_setup_hook` for `serve run` (Makefile
SERVE_ENV, --runtime-env-json): in each Ray worker process of that run, before Serve's actors
start, it rebinds those three to the node's loopback address. On a node with a routable address
(a cluster) it changes nothing. If Ray's code no longer has the lines it rewrites (another Ray
version), it raises: the worker, and so `make serve`, fails to start rather than listening on
every interface unnoticed (tests/unit/test_loopback.py checks the pinned Ray).
"""

from __future__ import annotations

import inspect
import ipaddress

import ray
from ray.serve._private import haproxy, replica

# Ray 2.60's HAProxy template lines that bind every interface -> the same on {host} only.
HAPROXY_WILDCARD_BINDS = {
    "bind :{{ config.metrics_port }}": "bind {host}:{{{{ config.metrics_port }}}}",
    "bind *:{{ config.stats_port }}": "bind {host}:{{{{ config.stats_port }}}}",
}
# How Ray 2.60's replica binds its inter-deployment gRPC server.
REPLICA_GRPC_BIND = 'add_port_to_grpc_server(self._server, "[::]:0")'


class RayChangedError(RuntimeError):
    """Ray's code differs from what this module rewrites: revisit it for the new version."""


def bind_serve_to_loopback() -> None:
    """Ray's worker_process_setup_hook: Serve's listeners on this node's loopback address."""
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        return  # a node other nodes must reach: Ray's and Serve's binds as they are
    host = f"[{node_ip}]" if ":" in node_ip else node_ip
    haproxy.HAPROXY_CONFIG_TEMPLATE = loopback_haproxy_template(
        haproxy.HAPROXY_CONFIG_TEMPLATE, host
    )
    _bind_replica_grpc(host)


def loopback_haproxy_template(template: str, host: str) -> str:
    """The HAProxy config template with its stats and metrics listeners on ``host``."""
    for wildcard, local in HAPROXY_WILDCARD_BINDS.items():
        local = local.format(host=host)
        if local in template:
            continue  # already rewritten (the hook ran before in this process)
        if template.count(wildcard) != 1:
            raise RayChangedError(
                f"Ray {ray.__version__}'s HAProxy template has no single {wildcard!r}: "
                "see deployments/loopback.py"
            )
        template = template.replace(wildcard, local)
    return template


def _bind_replica_grpc(host: str) -> None:
    add_port = replica.add_port_to_grpc_server
    if getattr(add_port, "loopback_host", None) == host:
        return
    if REPLICA_GRPC_BIND not in inspect.getsource(replica.Replica._on_initialized):
        raise RayChangedError(
            f"Ray {ray.__version__}'s replica no longer calls {REPLICA_GRPC_BIND}: "
            "see deployments/loopback.py"
        )

    def add_port_on_loopback(server, address: str) -> int:
        # "[::]:0" -> "127.0.0.1:0": the same server (TLS when RAY_USE_TLS is set, Ray's
        # token auth interceptor), reachable from this machine only.
        if address.startswith("[::]:"):
            address = f"{host}:{address.rsplit(':', 1)[1]}"
        return add_port(server, address)

    add_port_on_loopback.loopback_host = host
    replica.add_port_to_grpc_server = add_port_on_loopback
