"""What a model replica needs from Serve for its lifecycle: which replica it is (records that
several replicas write), and its ReplicaRollout with the store and Prometheus attached."""

from __future__ import annotations

import os
import socket
import uuid

from ray import serve
from ray.serve.context import _get_serve_request_context

from deployments.lifecycle.replica import ReplicaRollout
from deployments.lifecycle.versions import VersionedModels
from deployments.rollout_metrics import VersionMetrics
from store import TutorStore, open_store


def replica_name() -> str:
    """Serve's id of the running replica; outside Serve (a unit test), host and process."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a replica
        return f"{socket.gethostname()}:{os.getpid()}"


def current_request_id() -> str:
    """The id Serve's proxy gave this request (the client's ``X-Request-ID``, or a new one); it
    is on every replica log line of the request. Outside a request (tests), a fresh id."""
    return _get_serve_request_context().request_id or uuid.uuid4().hex


def in_replica() -> bool:
    try:
        serve.get_replica_context()
        return True
    except Exception:
        return False


def model_rollout(
    versions: VersionedModels, *, store_uri: str, store: TutorStore | None = None
) -> ReplicaRollout:
    """The replica's lifecycle work (serving stats, shadow outputs, guardrail) for ``versions``."""
    return ReplicaRollout(
        versions,
        store or open_store(store_uri),
        replica=replica_name(),
        # Ray's metrics only in a replica: a deployment class built in a unit test has no Ray
        # metrics agent to export to (and Ray's metric objects there crashed pytest's exit).
        observer=VersionMetrics() if in_replica() else None,
    )
