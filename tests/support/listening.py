"""Which TCP sockets a running `make serve` (or serve_process) listens on, and who owns them.

Used by tests/integration/test_api.py (test_every_socket_of_the_app_binds_loopback) and by
hand, to measure (README "Ports and what listens"):

    .venv/bin/python -m tests.support.listening PID     # PID: make's or serve's session leader

Ray's processes are found by session, not by parentage: `serve run` and everything it starts
(GCS, raylet, dashboard, workers, HAProxy) stay in the session of the process that started it,
even when one is re-parented to init, and other Rays on the same machine (other test runs,
another `make serve`) are in sessions of their own.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import os
import socket
import sys

import psutil


@dataclasses.dataclass(frozen=True)
class Listener:
    address: str
    port: int
    pid: int
    name: str
    protocol: str = "tcp"

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        # gRPC's IPv6 sockets name an IPv4 loopback bind as ::ffff:127.0.0.1.
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol} {host}:{self.port} ({self.name}, pid {self.pid})"


def session_pids(leader_pid: int) -> set[int]:
    """The leader and every process in its session, plus any descendant that left it."""
    session = os.getsid(leader_pid)
    pids = {leader_pid}
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == session:
                pids.add(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
    with contextlib.suppress(psutil.NoSuchProcess):
        pids |= {child.pid for child in psutil.Process(leader_pid).children(recursive=True)}
    return pids


def pids_mentioning(text: str) -> set[int]:
    """Processes whose command line mentions ``text`` (e.g. a Ray temp dir of one's own)."""
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        if any(text in part for part in proc.info["cmdline"] or ()):
            pids.add(proc.pid)
    return pids


def session_of_listener(port: int) -> int:
    """The session id of the process listening on TCP ``port`` (e.g. HAProxy's for the API)."""
    for proc in psutil.process_iter():
        try:
            connections = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            return os.getsid(proc.pid)
    raise LookupError(f"nothing listens on port {port}")


def listeners(pids: set[int]) -> list[Listener]:
    """Every TCP socket in LISTEN state and every bound, unconnected UDP socket owned by one
    of ``pids`` (a bound UDP socket takes datagrams from wherever they come), sorted by port."""
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            name = " ".join(proc.cmdline()[:1]) or proc.name()
            connections = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        name = os.path.basename(name) if name.startswith("/") else name
        for conn in connections:
            udp_bound = conn.type == socket.SOCK_DGRAM and conn.laddr and not conn.raddr
            if conn.status == psutil.CONN_LISTEN or udp_bound:
                protocol = "udp" if udp_bound else "tcp"
                found.append(Listener(conn.laddr.ip, conn.laddr.port, pid, name, protocol))
    return sorted(found, key=lambda item: (item.port, item.address))


def summary(found: list[Listener]) -> dict[str, int]:
    """How many listeners per bind address (e.g. {'127.0.0.1': 30, '::': 0})."""
    return dict(collections.Counter(item.address for item in found).most_common())


def main(argv: list[str]) -> int:
    found = listeners(session_pids(int(argv[1])))
    for item in found:
        print(("  loopback  " if item.loopback else "  EXPOSED   ") + str(item))
    print(f"{len(found)} listening sockets by bind address: {summary(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
