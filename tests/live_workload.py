"""Workload pieces for the live tests: collect our events, sockets, namespaces.

Kept out of ``test_live_workload.py`` so the tests read as what they check. Nothing here
sleeps without a bound: every wait has a deadline and says what it was waiting for.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ebpfwire
from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import Lost, Sample

HOST_PID = struct.Struct("<I")  # classic header: host_pid at offset 20
HOST_PID_OFFSET = 20
WAIT_SECONDS = 15


class Collector:
    """Decodes (strictly) the samples of chosen host pids that a Monitor delivers.

    Other processes' samples are dropped by their header's host_pid before decoding, so
    activity elsewhere on the machine cannot confuse a check.
    """

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.events: list[ebpfwire.Event] = []
        self.lost = 0

    def drain(self) -> None:
        """Drop everything waiting in the rings (events of earlier tests)."""
        while self.monitor.reader.read_batch(timeout=0):
            pass
        self.events.clear()

    def wait_for(
        self,
        pids: set[int],
        done: Callable[[list[ebpfwire.Event]], bool],
        what: str,
        timeout: float = WAIT_SECONDS,
    ) -> list[ebpfwire.Event]:
        """Read until ``done(events of pids)`` holds; AssertionError naming ``what`` if not."""
        deadline = time.monotonic() + timeout
        while True:
            mine = [e for e in self.events if e.host_pid in pids]
            if done(mine):
                return mine
            if time.monotonic() > deadline:
                summary = [(e.name, e.host_pid, e.retval) for e in mine]
                raise AssertionError(f"after {timeout} s still waiting for {what}; "
                                     f"lost {self.lost}; events of {pids}: {summary}")
            for rec in self.monitor.reader.read_batch(timeout=0.2):
                if isinstance(rec, Lost):
                    self.lost += rec.count
                elif (isinstance(rec, Sample) and len(rec.data) >= HOST_PID_OFFSET + 4
                      and HOST_PID.unpack_from(rec.data, HOST_PID_OFFSET)[0] in pids):
                    self.events.append(ebpfwire.decode(rec.data))


def named(name: str) -> Callable[[ebpfwire.Event], bool]:
    """Predicate: the event has this name."""
    return lambda e: e.name == name


def own_comm() -> str:
    """Our task name as the kernel reports it (what the header's comm holds)."""
    return Path("/proc/self/comm").read_text().rstrip("\n")


def free_port_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on an ephemeral port and NOT listening.

    A connect to its port is refused (RST), and holding it keeps anyone else from taking
    the port meanwhile.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# ---- namespaces --------------------------------------------------------------------------


@dataclass(frozen=True)
class NsChild:
    """A process in new PID and mount namespaces, as /proc describes it."""

    host_pid: int        # the namespaced process as the host sees it
    ns_pid: int          # ... and as its own PID namespace sees it (NSpid)
    parent_host_pid: int  # the `unshare` process
    pid_ns: int          # st_ino of /proc/<host_pid>/ns/pid
    mnt_ns: int          # st_ino of /proc/<host_pid>/ns/mnt


def _ppid(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _child_of(parent: int, timeout: float = WAIT_SECONDS) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if pid.isdigit() and _ppid(pid) == parent:
                return int(pid)
        time.sleep(0.01)
    raise AssertionError(f"process {parent} made no child within {timeout} s")


def _nspid(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(n) for n in line.split()[1:]]
    raise AssertionError(f"/proc/{pid}/status has no NSpid line")


@contextmanager
def unshared_child(command: str) -> Iterator[tuple[NsChild, Callable[[], int]]]:
    """``unshare --pid --mount --fork sh``: the shell waits for a line on stdin, then runs
    ``command`` (with ``exec``, so it stays pid 1).

    Yields the child's /proc facts, read while it waits, and ``release()`` which lets it
    go on and returns the exit status of ``unshare``.
    """
    proc = subprocess.Popen(
        ["unshare", "--pid", "--mount", "--fork", "/bin/sh", "-c", f"read go; exec {command}"],
        stdin=subprocess.PIPE,
    )
    try:
        host_pid = _child_of(proc.pid)
        nspid = _nspid(host_pid)
        child = NsChild(
            host_pid=host_pid,
            ns_pid=nspid[-1],
            parent_host_pid=proc.pid,
            pid_ns=os.stat(f"/proc/{host_pid}/ns/pid").st_ino,
            mnt_ns=os.stat(f"/proc/{host_pid}/ns/mnt").st_ino,
        )
        assert nspid[0] == host_pid and len(nspid) == 2, nspid

        def release() -> int:
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            return proc.wait(timeout=WAIT_SECONDS)

        yield child, release
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- a network namespace with a veth pair --------------------------------------------------

NETNS_HOST_ADDR = "10.123.45.1"   # a private /30 nothing else on the machine uses
NETNS_PEER_ADDR = "10.123.45.2"
NETNS_PREFIX = 30

NETNS_SERVER = """
import socket, sys
from pyroute2 import netns
netns.setns(sys.argv[1])
srv = socket.socket()
srv.bind((sys.argv[2], 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.close()
"""


def _addr_in_use(ipr, addr: str) -> bool:
    return any(a.get_attr("IFA_ADDRESS") == addr for a in ipr.get_addr(family=socket.AF_INET))


@contextmanager
def veth_netns() -> Iterator[str]:
    """A new netns holding one end of a veth pair (10.123.45.2/30; we get .1/30), up.

    Yields the netns name. The netns and the host end are removed on the way out, also
    after a failure.
    """
    from pyroute2 import IPRoute, NetNS, netns

    tag = f"ebw{os.getpid() % 100000}"
    name, host_if, peer_if = f"ebpfwire-{tag}", f"{tag}h", f"{tag}p"
    with IPRoute() as ipr:
        if _addr_in_use(ipr, NETNS_HOST_ADDR) or _addr_in_use(ipr, NETNS_PEER_ADDR):
            raise RuntimeError(f"{NETNS_HOST_ADDR}/{NETNS_PREFIX} is already used on this "
                               "machine; the netns test needs it free")
        netns.create(name)
        try:
            ipr.link("add", ifname=host_if, kind="veth", peer=peer_if)
            peer = ipr.link_lookup(ifname=peer_if)[0]
            ipr.link("set", index=peer, net_ns_fd=name)
            host = ipr.link_lookup(ifname=host_if)[0]
            ipr.addr("add", index=host, address=NETNS_HOST_ADDR, prefixlen=NETNS_PREFIX)
            ipr.link("set", index=host, state="up")
            with NetNS(name) as ns:
                inside = ns.link_lookup(ifname=peer_if)[0]
                ns.addr("add", index=inside, address=NETNS_PEER_ADDR, prefixlen=NETNS_PREFIX)
                ns.link("set", index=inside, state="up")
            yield name
        finally:
            for index in ipr.link_lookup(ifname=host_if):
                ipr.link("del", index=index)
            netns.remove(name)


@contextmanager
def netns_server(name: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A child process inside netns ``name`` listening on the peer address; (proc, port).

    It accepts one connection and exits.
    """
    proc = subprocess.Popen([sys.executable, "-c", NETNS_SERVER, name, NETNS_PEER_ADDR],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.strip():
            raise AssertionError(f"the netns server said nothing (exit {proc.wait()})")
        yield proc, int(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
