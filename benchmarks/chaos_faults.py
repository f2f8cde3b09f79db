"""The faults `make chaos` injects, each by the process or file it acts on, never by a name
that other applications on the machine could share.

- A replica's process is found by its title (``ray::ServeReplica:tutor:<Deployment>...``) among
  the processes of the session that this run's ``serve run`` leads (other Serve applications on
  the machine have the same titles), and killed with SIGKILL: no shutdown, as a crash or the
  OOM killer would.
- The SQLite store locked: a connection of the harness's own holds ``BEGIN EXCLUSIVE``.
- The SQLite store unwritable: the immutable attribute on the database and its ``-wal``
  (``chattr +i``; needs root or CAP_LINUX_IMMUTABLE). Measured here (a WAL database, Python's
  sqlite3): read-only permissions do not make writes fail. Root ignores them, and for any user
  they are checked only when a file is opened, while the replicas keep their connections open
  (as another user: the open connection went on writing, only a new one failed). The immutable
  attribute is checked on every write: an open connection's write fails with "disk I/O
  error", a new connection's with "attempt to write a readonly database", reads go on, and
  writes work again once it is cleared. The ``-shm`` file is left alone: made immutable, every
  process that has it mapped dies of SIGBUS, which is a crash, not an outage.
- The whole application stopped: SIGTERM to the ``serve run`` process (``ChaosApp``).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from benchmarks.replica_watch import ServeWatch
from tests.support.serve_process import dashboard_address, serve_running


def serve_session(config: Path) -> int:
    """The pid of the ``serve run <config>`` process, which leads its own session."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(config) in cmdline and "run" in cmdline:
            with contextlib.suppress(psutil.Error):
                if os.getsid(process.pid) == process.pid:
                    return process.pid
    raise LookupError(f"no `serve run {config}` process")


def replica_pids(session: int, deployment: str) -> list[int]:
    """Pids of the deployment's replica processes in this session, oldest first, whichever
    application holds it (deployment names are unique across the tutor's and emotion's)."""
    # Titles seen: ray::ServeReplica:emotion:Emotion, at work with the method after a dot, and
    # ray::SERVE_REPLICA::tutor#Ingress#<id>:ServeReplica:tutor:Ingress.__init__ while starting.
    title = re.compile(rf"(?:^ray::|:)ServeReplica:[^:#]+:{re.escape(deployment)}(?:\.|$)")
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmdline = process.info["cmdline"] or []
        name = cmdline[0].split()[0] if cmdline and cmdline[0].strip() else ""
        if not title.search(name):
            continue
        with contextlib.suppress(OSError):
            if os.getsid(process.pid) == session:
                found.append((process.info["create_time"], process.pid))
    return [pid for _, pid in sorted(found)]


def kill_replica(session: int, deployment: str) -> dict:
    """SIGKILL the deployment's oldest replica; what was killed and when."""
    pids = replica_pids(session, deployment)
    if not pids:
        raise LookupError(f"no {deployment} replica in session {session}")
    os.kill(pids[0], signal.SIGKILL)
    return {"pid": pids[0], "replica_processes": len(pids), "at": time.time()}


def wait_replaced(watch: ServeWatch, deployment: str, before: int, timeout_s: float) -> dict:
    """After a kill: when Serve saw the replica gone, and when it had as many running again."""
    noticed = watch.wait_for(lambda w: w.running(deployment) < before, min(timeout_s, 20))
    restored = watch.wait_for(lambda w: w.running(deployment) >= before, timeout_s)
    return {"noticed_after_s": noticed, "running_again_after_s": restored}


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[dict]:
    """Hold the database's write lock (``BEGIN EXCLUSIVE``) until the block ends. In WAL mode
    readers go on; every writer waits its busy timeout and then fails ("database is locked")."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    info: dict = {}
    try:
        conn.execute("BEGIN EXCLUSIVE")
        info["from"] = time.time()
        yield info
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()
        info["until"] = time.time()


def _chattr(flag: str, paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)


def immutable_supported(directory: Path) -> str | None:
    """None when ``chattr +i`` works on files in ``directory``; else why not."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory) as probe:
            done = _chattr("+i", [Path(probe.name)])
            if done.returncode == 0:
                _chattr("-i", [Path(probe.name)])
                return None
            return done.stderr.strip() or f"chattr exited {done.returncode}"
    except (OSError, FileNotFoundError) as exc:
        return f"chattr: {exc}"


@contextlib.contextmanager
def sqlite_unwritable(path: Path) -> Iterator[dict]:
    """The database and its -wal immutable until the block ends (see the module's docstring)."""
    files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
    done = _chattr("+i", files)
    if done.returncode != 0:
        raise OSError(f"chattr +i {files}: {done.stderr.strip()}")
    info = {"from": time.time(), "files": [p.name for p in files]}
    try:
        yield info
    finally:
        _chattr("-i", files)
        info["until"] = time.time()


BLOCKS = range(20000, 29000, 100)  # below Linux's ephemeral ports (32768-60999) and Serve's


def port_block() -> dict[str, str]:
    """Every port this run's application listens on by number, from one block of 100 that
    nothing else here draws from. Seen in the first runs: the proxy's port from
    ``free_port()`` (an ephemeral port, given back before HAProxy binds it a minute later) and
    the Ingress replicas' window in Serve's default range were taken by other applications
    started on the machine meanwhile, and some of this run's turns were answered by them (401
    from one, 200 without storing anything in this run's store from another). ``ChaosApp``
    checks after each start that only its own processes listen on these ports."""
    for _ in range(50):
        base = random.choice(BLOCKS)
        if all(port_free(p) for p in range(base, base + 100)):
            break
    return {
        "port": str(base),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(base + 1),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(base + 2),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(base + 10),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(base + 49),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(base + 50),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(base + 99),
    }


def foreign_listeners(ports: range, session: int) -> dict[int, int]:
    """{port: pid} for listeners on ``ports`` that are not processes of ``session``."""
    found: dict[int, int] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # not root: other users' sockets are not ours to see
        return found
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or conn.laddr.port not in ports or not conn.pid:
            continue
        with contextlib.suppress(OSError):
            if os.getsid(conn.pid) != session:
                found[conn.laddr.port] = conn.pid
    return found


def port_free(port: int) -> bool:
    """Nothing listens on ``port``: a server could bind it now. SO_REUSEADDR, as HAProxy binds:
    without it the connections of the last run still in TIME_WAIT (60 s on Linux) make a port
    nobody listens on look taken, and a restart waited out the whole 60 s for it (measured:
    SIGTERM to the new `serve run` 63 s, of which serve run's exit took 3)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ChaosApp:
    """The application under test, started as `make serve` starts it, that can be stopped with
    SIGTERM and started again on the same config, port, store and environment."""

    def __init__(self, config: Path, port: int, workdir: Path, env: dict[str, str]) -> None:
        """``port``: the first of the block of 100 that ``env`` names (``port_block``)."""
        self.config, self.port, self.workdir, self.env = config, port, workdir, env
        self.starts = 0
        self.session = 0
        self.dashboard = ""
        self.base_url = ""
        self._stack = contextlib.ExitStack()

    def start(self, timeout_s: float = 300) -> str:
        self.starts += 1
        log = self.workdir / f"serve-{self.starts}.log"
        self.base_url = self._stack.enter_context(
            serve_running(
                self.config, port=self.port, log_path=log, env=self.env, timeout_s=timeout_s
            )
        )
        self.session = serve_session(self.config)
        self.dashboard = dashboard_address(log)
        self.check_ports()
        return self.base_url

    def check_ports(self) -> None:
        """Refuse to measure an application whose ports another one also listens on."""
        shared = foreign_listeners(range(self.port, self.port + 100), self.session)
        if shared:
            raise RuntimeError(f"ports of this run taken by other processes: {shared}")

    def terminate(self, timeout_s: float = 120) -> dict:
        """SIGTERM to `serve run`; waits for it to exit, then ends what it left behind."""
        at = time.time()
        process = psutil.Process(self.session)
        os.kill(self.session, signal.SIGTERM)
        with contextlib.suppress(psutil.TimeoutExpired):
            process.wait(timeout=timeout_s)
        exited = time.time()
        self._stack.close()  # serve_running's exit: whatever is left of the session, by pid
        self._stack = contextlib.ExitStack()
        deadline = time.monotonic() + 60
        while not port_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        # Where a restart's time goes: serve run's exit, its leftovers and the port, the start.
        return {
            "sigterm_at": at,
            "exited_after_s": round(exited - at, 1),
            "port_free_after_s": round(time.time() - at, 1),
        }

    def stop(self) -> None:
        self._stack.close()
