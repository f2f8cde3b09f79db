"""Which replica this is, for records that several replicas of one deployment write."""

from __future__ import annotations

import os
import socket

from ray import serve


def replica_name() -> str:
    """Serve's id of the running replica; outside Serve (a unit test), host and process."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a replica
        return f"{socket.gethostname()}:{os.getpid()}"
