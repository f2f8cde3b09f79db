"""Nothing listens where it need not: the application started as `make serve` starts it
(tests/support/serve_process.py) binds every socket of its process tree to loopback.

The processes are this test's own: those in the session of the process that serves the test's
port (serve_process starts `serve run` in a session of its own, and Ray's processes, HAProxy
included, stay in it) plus any process whose command line names this test's Ray temp dir.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support import listening
from tests.support.serve_process import free_port, serve_running, write_config

pytestmark = pytest.mark.integration

# Processes that must be among the owners, or the test looked at the wrong tree: Ray's GCS and
# raylet, the dashboard's agent, HAProxy in front of the API, and Serve's replicas.
EXPECTED_OWNERS = ("gcs_server", "raylet", "DashboardAgent", "haproxy", "ServeReplica")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sockets")
    # Ray's socket paths must stay short (AF_UNIX limit): a temp dir of our own under /tmp.
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-sock-", dir="/tmp"))
    port = free_port()
    config = write_config(tmp / "serve_config.yaml", port=port, store_uri=f"sqlite:///{tmp}/t.db")
    env = {"RAY_TMPDIR": str(ray_dir)}
    try:
        with serve_running(config, port=port, log_path=tmp / "serve.log", env=env) as url:
            yield url, port, ray_dir
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_every_socket_of_the_app_binds_loopback(app):
    url, port, ray_dir = app
    # A turn first, so that the replicas' data plane (gRPC between them) is in use, not only up.
    turn = httpx.post(
        f"{url}/v1/tutor",
        json={"learner_id": "sockets", "session_id": "s1", "message": "fractions again"},
        timeout=60,
    )
    assert turn.status_code == 200, turn.text

    pids = listening.session_pids(listening.session_of_listener(port))
    pids |= listening.pids_mentioning(str(ray_dir))
    found = listening.listeners(pids)

    owners = " ".join(item.name for item in found)
    missing = [name for name in EXPECTED_OWNERS if name not in owners]
    assert not missing, f"no socket of {missing} among: {[str(item) for item in found]}"
    exposed = [str(item) for item in found if not (item.loopback or _haproxy_log_sender(item))]
    assert exposed == [], (
        f"{len(exposed)} of {len(found)} sockets bind beyond loopback: {exposed}; "
        f"by bind address: {listening.summary(found)}"
    )


def _haproxy_log_sender(item: listening.Listener) -> bool:
    """HAProxy's UDP sockets for its access log (RAY_SERVE_HAPROXY_LOG_TARGET, 127.0.0.1:514 by
    default): the kernel binds them to 0.0.0.0 on HAProxy's first send, and HAProxy never reads
    from them. A unix-socket log target (e.g. /dev/log) has none (README "Ports and what
    listens"). Every TCP socket of HAProxy is held to loopback like the rest."""
    return item.protocol == "udp" and item.name == "haproxy"
