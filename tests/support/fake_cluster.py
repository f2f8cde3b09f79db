"""A local autoscaling Ray cluster from Ray's fake multi-node provider, for tests and benchmarks.

``fake_autoscaling_cluster`` starts a head with ``ray start --head --block`` and an autoscaling
config of provider ``fake_multinode``: the head's autoscaler (v1, its monitor process)
"launches" a worker node by starting another raylet on this machine, with the resources its
node type advertises (``GPU: 1`` is a logical GPU: nothing runs on a GPU), and removes it once
idle. Autoscaler v2 (RAY_enable_autoscaler_v2=1) does not start with this provider in Ray 2.60:
it fills the config in from fake_multi_node/example.yaml, which the wheel does not ship, and
its monitor dies with FileNotFoundError (so does Ray's own autoscaling test helper, which
reads the same file and is never used here). v1 reads the config as written, so it is written
complete here.

Isolation from any other Ray on the machine (a `make serve`, another test run):
- every port free, and ``provider.gcs_address`` set: the fake provider otherwise points its
  workers at ``<node ip>:6379``, whoever's GCS that is. Clients of the state API must be given
  ``dashboard_url``: without an address it looks for "the" local Ray and finds them all;
- a temp dir of its own (short, under /tmp: Unix socket paths are limited to ~107 bytes);
- ``RAY_AUTH_MODE=disabled`` for the cluster's processes only: with the mode unset and a token in
  ~/.ray/auth_token, Ray 2.60's `ray start` turns token auth on, and a driver connecting with an
  explicit address would then need it too; turning it on in pytest's own process breaks later
  in-process ``ray.init`` calls. (The cluster lives for one test, without a token meanwhile.)
- teardown ends only processes of this cluster: the head's process session and descendants, and
  any process whose command line names the cluster's temp dir (the worker nodes' raylets are
  children of the autoscaler's monitor process), each ended by its pid; nothing that ends
  processes by name or every Ray on the machine is used.

All nodes share one session dir, so each log line reaches a driver once per node's log monitor
(the duplicated lines in a test's output are that).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import ray
import yaml

from tests.support.serve_process import REPO_ROOT, free_port

HEAD_NODE_TYPE = "ray.head.default"  # the fake provider's name for the head's type
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node: Ray's default is 30% of RAM


@dataclass
class FakeCluster:
    address: str  # the GCS, for ray.init(address=...)
    dashboard_url: str
    temp_dir: Path
    head: subprocess.Popen

    @property
    def logs_dir(self) -> Path:
        return self.temp_dir / "session_latest" / "logs"

    def monitor_log(self, chars: int = 4000) -> str:
        """The end of the autoscaler's logs: what it launched and removed, and why not."""
        parts = []
        for name in ("monitor.log", "monitor.out", "monitor.err"):
            path = self.logs_dir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or f"(no monitor logs under {self.logs_dir})"


def autoscaling_config(
    *,
    gcs_address: str,
    head_resources: dict[str, float],
    worker_types: dict[str, dict[str, Any]],
    idle_timeout_minutes: float,
) -> dict[str, Any]:
    """A complete config: v1 reads the file as it is (no defaults are filled in; the defaults
    file it would use, fake_multi_node/example.yaml, is not in the wheel)."""
    node_types: dict[str, dict[str, Any]] = {
        HEAD_NODE_TYPE: {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
    }
    for name, spec in worker_types.items():
        node_types[name] = {"node_config": {}, "min_workers": 0, **spec}
    return {
        "cluster_name": "fake_multinode",
        "max_workers": sum(spec.get("max_workers", 1) for spec in worker_types.values()),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": node_types,
        "head_node_type": HEAD_NODE_TYPE,
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@contextlib.contextmanager
def fake_autoscaling_cluster(
    worker_types: dict[str, dict[str, Any]],
    *,
    head_resources: dict[str, float] | None = None,
    idle_timeout_minutes: float = 0.1,
    env: dict[str, str] | None = None,
    keep_logs_in: Path | None = None,
    start_timeout_s: float = 90.0,
) -> Iterator[FakeCluster]:
    """Run the cluster until the block ends. ``worker_types``: node types as in a cluster
    config, e.g. ``{"gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "max_workers": 1}}``
    (``min_workers`` defaults to 0, ``object_store_memory`` to 200 MiB). ``env``: extra
    environment of every node, hence of every replica. ``keep_logs_in``: where the session's
    logs are copied at the end (the temp dir itself is removed)."""
    head_resources = dict(head_resources or {"CPU": 2, "GPU": 0})
    worker_types = {
        name: {
            **spec,
            "resources": {"object_store_memory": OBJECT_STORE_BYTES, **spec["resources"]},
        }
        for name, spec in worker_types.items()
    }
    temp_dir = Path(tempfile.mkdtemp(prefix="fk", dir="/tmp"))
    ip = ray._private.services.get_node_ip_address()  # what the fake provider uses
    gcs_port, dashboard_port = free_port(), free_port()
    config_path = temp_dir / "autoscaling.yaml"
    config = autoscaling_config(
        gcs_address=f"{ip}:{gcs_port}",
        head_resources=head_resources,
        worker_types=worker_types,
        idle_timeout_minutes=idle_timeout_minutes,
    )
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--autoscaling-config={config_path}",
        f"--temp-dir={temp_dir}",
        f"--port={gcs_port}",
        f"--num-cpus={head_resources.get('CPU', 0)}",
        f"--num-gpus={head_resources.get('GPU', 0)}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--min-worker-port=0",  # 0: any free port (Ray's default is a fixed range)
        "--max-worker-port=0",
        "--disable-usage-stats",
    ]
    full_env = {
        **os.environ,
        "RAY_FAKE_CLUSTER": "1",
        "RAY_AUTH_MODE": "disabled",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Only read when Serve runs HAProxy; its default ports are fixed.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        **(env or {}),
    }
    full_env.pop("RAY_ADDRESS", None)
    log = (temp_dir / "ray_start.log").open("w")
    head = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster = FakeCluster(
        address=f"{ip}:{gcs_port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        temp_dir=temp_dir,
        head=head,
    )
    failed = True
    try:
        _wait_started(cluster, start_timeout_s)
        yield cluster
        failed = False
    finally:
        leftovers = stop_cluster(cluster)
        log.close()
        if keep_logs_in is not None:
            _copy_logs(cluster, keep_logs_in)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if leftovers and not failed:
            raise RuntimeError(f"processes of the fake cluster survived SIGKILL: {leftovers}")


def _wait_started(cluster: FakeCluster, timeout_s: float) -> None:
    """Until the dashboard answers (the state API, which tests use, goes through it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _head_exited(cluster):
            raise RuntimeError(f"ray start exited early:\n{_start_log(cluster)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{cluster.dashboard_url}/api/gcs_healthz", timeout=5).is_success:
                return
        time.sleep(1.0)
    raise TimeoutError(f"fake cluster not up after {timeout_s}s:\n{_start_log(cluster)}")


def _start_log(cluster: FakeCluster) -> str:
    return (cluster.temp_dir / "ray_start.log").read_text(errors="replace")[-4000:]


def cluster_processes(cluster: FakeCluster) -> list[psutil.Process]:
    """Live processes of this cluster: the head's session and descendants, and any process
    whose command line names its temp dir. Others' processes are never matched."""
    found: dict[int, psutil.Process] = {}
    # The head's pid is its own, and names its session, only until it is reaped.
    session = cluster.head.pid if cluster.head.returncode is None else None
    if session:
        with contextlib.suppress(psutil.NoSuchProcess):
            head = psutil.Process(session)
            for process in [head, *head.children(recursive=True)]:
                found[process.pid] = process
    marker = str(cluster.temp_dir)
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            cmdline = " ".join(process.info["cmdline"] or [])
            if marker in cmdline or (session and os.getsid(process.pid) == session):
                found[process.pid] = process
    found.pop(os.getpid(), None)  # never this process (a shell may share a session)
    return [process for process in found.values() if _alive(process)]


def stop_cluster(cluster: FakeCluster, grace_s: float = 20.0) -> list[int]:
    """SIGTERM the head (it ends what it started), then SIGTERM/SIGKILL what is left of the
    cluster: the worker nodes are the monitor's, and a head that died of a failed child leaves
    orphans. The head is reaped last, so that its pid names its session until then. Returns
    the pids still alive."""
    members = cluster_processes(cluster)  # while the tree is whole
    if not _head_exited(cluster):
        cluster.head.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while not _head_exited(cluster) and time.monotonic() < deadline:
            time.sleep(0.2)
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        remaining = {p.pid: p for p in [*members, *cluster_processes(cluster)] if _alive(p)}
        if not remaining:
            break
        for process in remaining.values():
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)
        psutil.wait_procs(list(remaining.values()), timeout=wait_s)
    leftovers = {p.pid for p in [*members, *cluster_processes(cluster)] if _alive(p)}
    if not _head_exited(cluster):
        cluster.head.kill()
    cluster.head.wait()
    return sorted(leftovers)


def _head_exited(cluster: FakeCluster) -> bool:
    """Whether `ray start` has exited, without reaping it (Popen.poll would)."""
    if cluster.head.returncode is not None:
        return True
    try:
        return (
            os.waitid(os.P_PID, cluster.head.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        )
    except ChildProcessError:
        return True


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _copy_logs(cluster: FakeCluster, target: Path) -> None:
    with contextlib.suppress(OSError):
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(cluster.temp_dir / "ray_start.log", target / "ray_start.log")
        shutil.copytree(cluster.logs_dir, target / "logs", dirs_exist_ok=True)
