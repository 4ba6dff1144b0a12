"""The whole pipeline live: real syscalls -> bundled BPF program -> perf rings -> decoder.

Each live test (marked ``live``) makes a known workload (files, sockets, exec, exit,
namespaces), finds its events by the pids it created and checks them field by field after
strict decoding. One Monitor serves the module (loading and closing cost seconds); the
namespace test needs its own, filtered on the ``unshare`` process, because the namespaced
shell is our grandchild. The last tests are not live: they check the committed real
captures of ``fixtures/record_real.py`` for what holds on any machine."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_workload import (
    NETNS_PEER_ADDR,
    Collector,
    free_port_socket,
    netns_server,
    own_comm,
    unshared_child,
    veth_netns,
)

import ebpfwire
from ebpfwire.capture import CaptureReader
from ebpfwire.kernel import syscalls
from ebpfwire.kernel.monitor import Monitor
from ebpfwire.wire.events import AF_INET

EVENTS = ["openat", "socket", "bind", "listen", "connect", "accept", "execve", "do_exit", "tcp"]



def _wait_gone(ids: set[int], listing) -> set[int]:
    """Ids still loaded; the kernel frees objects after an RCU grace period."""
    deadline = time.monotonic() + 15
    while ids & set(listing()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ids & set(listing())


@pytest.fixture(scope="module")
def monitor() -> Iterator[Monitor]:
    """One Monitor for the module: our process and its children, our own events included."""
    mon = Monitor(events=EVENTS, pid=os.getpid(), ignore_self=False)
    prog_ids = {syscalls.object_id(fd, True) for fd in mon.prog_fds.values()}
    map_ids = {syscalls.object_id(fd, False) for fd in mon.map_fds.values()}
    try:
        yield mon
    finally:
        mon.close()
    assert _wait_gone(prog_ids, syscalls.loaded_programs) == set()
    assert _wait_gone(map_ids, syscalls.loaded_maps) == set()


@pytest.fixture
def collector(monitor: Monitor) -> Collector:
    """A collector on the module's Monitor, emptied of earlier tests' events."""
    col = Collector(monitor)
    col.drain()
    return col


def _one(events: list[ebpfwire.Event], what: str, pred) -> ebpfwire.Event:
    found = [e for e in events if pred(e)]
    assert len(found) == 1, f"expected one {what}, found {len(found)}: {found}"
    return found[0]


@pytest.mark.live
def test_openat_of_a_new_file(collector: Collector, tmp_path):
    path = str(tmp_path / f"ebpfwire-live-{os.getpid()}-{time.monotonic_ns()}")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    os.close(fd)

    def is_ours(e):
        return e.name == "openat" and e.args[1].value == path

    events = collector.wait_for({os.getpid()}, lambda es: any(map(is_ours, es)), "our openat")
    ev = _one(events, "openat of our file", is_ours)
    assert ev.event_id == 257 and ev.argnum == 3 and len(ev.args) == 3
    dirfd, name, flags = ev.args
    assert dirfd.type == ebpfwire.ArgType.INT_T and dirfd.value == -100  # AT_FDCWD
    assert name.type == ebpfwire.ArgType.STR_T
    assert flags.type == ebpfwire.ArgType.OPEN_FLAGS_T
    assert flags.value == os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    assert {"O_WRONLY", "O_CREAT", "O_CLOEXEC"} <= set(flags.text.split("|"))
    assert ev.retval == fd and ev.errno is None
    assert (ev.host_pid, ev.pid, ev.host_ppid, ev.ppid) == (os.getpid(), os.getpid(),
                                                              os.getppid(), os.getppid())
    assert (ev.pid_id, ev.mnt_id) == (0, 0)  # a host process
    assert ev.uid == os.getuid()
    assert ev.comm == own_comm()
    assert ev.ts <= time.monotonic_ns()


def _sockaddr(arg) -> tuple:
    assert arg.type == ebpfwire.ArgType.SOCKADDR_T
    return (arg.value.family, arg.value.addr, arg.value.port)


@pytest.mark.live
def test_connect_accepted_and_refused(collector: Collector):
    me = os.getpid()
    server = socket.create_server(("127.0.0.1", 0))
    closed = free_port_socket()
    port, refused_port = server.getsockname()[1], closed.getsockname()[1]
    try:
        with socket.socket() as ok:
            ok.connect(("127.0.0.1", port))
            ok_fd = ok.fileno()
        with socket.socket() as bad:
            with pytest.raises(ConnectionRefusedError):
                bad.connect(("127.0.0.1", refused_port))
            bad_fd = bad.fileno()
    finally:
        server.close()
        closed.close()

    def seen(es):
        ports = {e.args[1].value.port for e in es if e.name == "connect"}
        return {port, refused_port} <= ports and any(e.name == "tcp_connect" for e in es)

    events = collector.wait_for({me}, seen, "both connects and a tcp_connect")
    good = _one(events, "connect to the listener",
                lambda e: e.name == "connect" and e.args[1].value.port == port)
    assert good.event_id == 42 and good.argnum == 2
    assert good.args[0].type == ebpfwire.ArgType.INT_T and good.args[0].value == ok_fd
    assert _sockaddr(good.args[1]) == (AF_INET, "127.0.0.1", port)
    assert good.retval == 0 and good.errno is None
    assert good.host_pid == me and good.comm == own_comm()

    bad = _one(events, "refused connect",
               lambda e: e.name == "connect" and e.args[1].value.port == refused_port)
    assert bad.args[0].value == bad_fd
    assert _sockaddr(bad.args[1]) == (AF_INET, "127.0.0.1", refused_port)
    assert bad.retval == -errno.ECONNREFUSED == -111
    assert bad.errno == "ECONNREFUSED"

    tcp = _one(events, "tcp_connect to the listener",
               lambda e: e.name == "tcp_connect" and e.args[1].value.port == port)
    assert tcp.event_id == 400 and tcp.argnum == 2 and tcp.retval == 0
    assert tcp.args[0].type == ebpfwire.ArgType.STR_T and tcp.args[0].value == "TCP"
    assert _sockaddr(tcp.args[1]) == (AF_INET, "127.0.0.1", port)
    assert tcp.host_pid == me and tcp.errno is None  # not a syscall: retval is no errno


@pytest.mark.live
def test_server_socket_bind_listen_accept(collector: Collector):
    me = os.getpid()
    backlog = 7
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_fd = server.fileno()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen(backlog)
    client = socket.create_connection(("127.0.0.1", port))
    client_port = client.getsockname()[1]
    conn, peer = server.accept()
    conn_fd = conn.fileno()
    for s in (conn, client, server):
        s.close()
    assert peer == ("127.0.0.1", client_port)

    def seen(es):
        return ({"socket", "bind", "listen", "accept", "tcp_accept"} <= {e.name for e in es})

    events = collector.wait_for({me}, seen, "socket, bind, listen, accept, tcp_accept")
    sock = _one(events, "socket of the server",
                lambda e: e.name == "socket" and e.retval == server_fd)
    assert sock.event_id == 41 and sock.argnum == 3
    domain, stype, proto = sock.args
    assert domain.type == ebpfwire.ArgType.SOCK_DOM_T and domain.value == socket.AF_INET
    assert domain.text == "AF_INET"
    assert stype.type == ebpfwire.ArgType.SOCK_TYPE_T
    assert stype.value == socket.SOCK_STREAM | socket.SOCK_CLOEXEC  # Python adds CLOEXEC
    assert set(stype.text.split("|")) == {"SOCK_STREAM", "SOCK_CLOEXEC"}
    assert proto.type == ebpfwire.ArgType.INT_T and proto.value == 0

    bind = _one(events, "bind of the server",
                lambda e: e.name == "bind" and e.args[0].value == server_fd)
    assert bind.event_id == 49 and bind.retval == 0
    # bound to port 0: the sockaddr is what we passed, the kernel chose the port later
    assert _sockaddr(bind.args[1]) == (AF_INET, "127.0.0.1", 0)

    listen = _one(events, "listen", lambda e: e.name == "listen")
    assert listen.event_id == 50 and listen.retval == 0
    assert [a.value for a in listen.args] == [server_fd, backlog]

    acc = _one(events, "accept", lambda e: e.name == "accept")
    assert acc.event_id == 43 and acc.argnum == 2
    assert acc.args[0].value == server_fd       # the listening socket
    assert acc.retval == conn_fd                 # the new connection
    assert _sockaddr(acc.args[1]) == (AF_INET, "127.0.0.1", client_port)  # the peer

    tcp = _one(events, "tcp_accept", lambda e: e.name == "tcp_accept"
               and e.args[1].value.port == port)
    assert tcp.event_id == 401 and tcp.args[0].value == "TCP"
    # peer address with the local port (docs/bpf-program.md)
    assert _sockaddr(tcp.args[1]) == (AF_INET, "127.0.0.1", port)


@pytest.mark.live
def test_execve_with_25_arguments(collector: Collector):
    argv = ["/bin/true"] + [f"a{i}" for i in range(1, 25)]
    assert len(argv) == 25
    child = subprocess.Popen(argv)
    assert child.wait(timeout=30) == 0

    def seen(es):
        return len([e for e in es if e.name == "execve"]) >= 2

    events = collector.wait_for({child.pid}, seen, "the execve entry and exit events")
    execs = [e for e in events if e.name == "execve"]
    assert len(execs) == 2
    entry, done = sorted(execs, key=lambda e: e.ts)
    assert entry.event_id == 59 and entry.argnum == 2 and entry.retval == 0
    filename, args = entry.args
    assert filename.type == ebpfwire.ArgType.STR_T and filename.value == "/bin/true"
    assert args.type == ebpfwire.ArgType.STR_ARR_T
    assert args.value == argv[:20] + ["..."]
    assert args.value.truncated is True
    assert entry.host_pid == entry.pid == child.pid
    assert entry.host_ppid == os.getpid()
    assert done.event_id == 59 and done.argnum == 0 and done.args == []
    assert done.retval == 0 and done.host_pid == child.pid
    assert done.comm == "true"  # the exit event comes from the new program


@pytest.mark.live
def test_exit_code_is_a_raw_wait_status(collector: Collector):
    child = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
    assert child.wait(timeout=30) == 3

    events = collector.wait_for({child.pid}, lambda es: any(e.name == "do_exit" for e in es),
                                "the child's do_exit")
    ev = _one(events, "do_exit", lambda e: e.name == "do_exit")
    assert ev.event_id == 351 and ev.argnum == 0 and ev.args == []
    assert ev.retval == 3 << 8 == 768  # wait(2) status, docs/bpf-program.md
    assert ev.host_pid == child.pid and ev.host_ppid == os.getpid()
    assert ev.errno is None


@pytest.mark.live
def test_tcp_into_a_network_namespace(collector: Collector):
    me = os.getpid()
    with veth_netns() as name, netns_server(name) as (server, port):
        with socket.create_connection((NETNS_PEER_ADDR, port), timeout=10) as sock:
            fd = sock.fileno()
        assert server.wait(timeout=30) == 0

        def seen(es):
            return any(e.name == "connect" and e.args[1].value.port == port for e in es) and \
                any(e.name == "tcp_connect" and e.args[1].value.port == port for e in es)

        events = collector.wait_for({me}, seen, "connect and tcp_connect into the netns")
    conn = _one(events, "connect into the netns",
                lambda e: e.name == "connect" and e.args[1].value.port == port)
    assert conn.retval in (0, -errno.EINPROGRESS)  # create_connection with a timeout: non-blocking
    assert conn.args[0].value == fd
    assert _sockaddr(conn.args[1]) == (AF_INET, NETNS_PEER_ADDR, port)
    tcp = _one(events, "tcp_connect into the netns",
               lambda e: e.name == "tcp_connect" and e.args[1].value.port == port)
    assert tcp.args[0].value == "TCP"
    assert _sockaddr(tcp.args[1]) == (AF_INET, NETNS_PEER_ADDR, port)
    assert (tcp.host_pid, tcp.pid_id, tcp.mnt_id) == (me, 0, 0)


@pytest.mark.live
def test_child_in_new_pid_and_mount_namespaces(tmp_path):
    known = tmp_path / "ebpfwire-ns-known-file"
    known.write_text("x\n")
    with unshared_child(f"/bin/cat {known}") as (child, release):
        # the namespaced shell is our grandchild: filter on its parent, `unshare`
        with Monitor(events=["openat", "execve", "do_exit"], pid=child.parent_host_pid,
                     ignore_self=True) as mon:
            prog_ids = {syscalls.object_id(fd, True) for fd in mon.prog_fds.values()}
            assert release() == 0
            col = Collector(mon)

            def seen(es):
                return (any(e.name == "openat" and e.args[1].value == str(known) for e in es)
                        and any(e.name == "do_exit" for e in es))

            events = col.wait_for({child.host_pid}, seen, "cat's openat and exit in the ns")
    assert _wait_gone(prog_ids, syscalls.loaded_programs) == set()
    assert child.ns_pid == 1 and child.pid_ns != 0 and child.mnt_ns != 0
    opened = _one(events, "openat of the known file",
                  lambda e: e.name == "openat" and e.args[1].value == str(known))
    assert opened.retval >= 0 and opened.comm == "cat"
    execs = sorted((e for e in events if e.name == "execve"), key=lambda e: e.ts)
    assert [(e.argnum, e.retval) for e in execs] == [(2, 0), (0, 0)]
    assert [a.value for a in execs[0].args] == ["/bin/cat", ["/bin/cat", str(known)]]
    for ev in [opened, *execs, _one(events, "do_exit", lambda e: e.name == "do_exit")]:
        assert ev.host_pid == child.host_pid
        assert ev.pid == child.ns_pid == 1           # init of its PID namespace
        assert ev.ppid == 0                          # its parent is outside the namespace
        assert ev.host_ppid == child.parent_host_pid
        assert ev.pid_id == child.pid_ns
        assert ev.mnt_id == child.mnt_ns


# ---- the committed real captures (not live: they run anywhere from the bytes) -------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _read_capture(name: str) -> tuple[CaptureReader, list[ebpfwire.Event], list[str]]:
    """Every record of a real capture decoded strictly, and its golden JSONL lines."""
    path = FIXTURES / f"{name}.ewcap"
    lines = []
    events = []
    with CaptureReader(path) as reader:
        for record, event in reader.events(strict=True):
            assert not isinstance(event, Exception), f"record at {record.offset}: {event}"
            assert event is not None, f"{name}: a LOST record at {record.offset}"
            events.append(event)
            lines.append(json.dumps(event.to_dict()))
    assert reader.damage == [] and reader.notes == []
    assert (reader.header.layout, reader.header.arch) == ("classic", "x86_64")
    assert path.stat().st_size < 200 * 1024
    return reader, events, lines


def test_real_workload_capture():
    _, events, lines = _read_capture("real-workload")
    golden = (FIXTURES / "real-workload.jsonl").read_text().splitlines()
    assert lines == golden
    assert {"execve", "security_bprm_check", "openat", "socket", "bind", "listen", "connect",
            "accept", "tcp_connect", "tcp_accept", "do_exit"} <= {e.name for e in events}
    assert all((e.pid_id, e.mnt_id) == (0, 0) and e.pid == e.host_pid for e in events)

    def exec_of(argv0: str) -> ebpfwire.Event:
        return _one(events, f"execve of {argv0}",
                    lambda e: e.name == "execve" and e.argnum == 2 and e.args[0].value == argv0)

    many = exec_of("/bin/true").args[1]
    assert many.value == ["/bin/true"] + [f"a{i}" for i in range(1, 20)] + ["..."]
    assert many.value.truncated
    exit3 = exec_of("/bin/sh")
    assert exit3.args[1].value == ["/bin/sh", "-c", "exit 3"]
    status = _one(events, "do_exit of sh -c 'exit 3'",
                  lambda e: e.name == "do_exit" and e.host_pid == exit3.host_pid)
    assert status.retval == 768

    for path in ("/tmp/ebpfwire-fixture/alpha.txt", "/tmp/ebpfwire-fixture/beta.txt"):
        opened = _one(events, f"openat of {path}",
                      lambda e, p=path: e.name == "openat" and e.args[1].value == p)
        assert opened.comm == "cat" and opened.retval >= 0

    connects = [e for e in events if e.name == "connect"]
    assert [(c.retval, c.errno) for c in connects] == [(0, None), (-111, "ECONNREFUSED")]
    tcp_ports = {e.args[1].value.port for e in events if e.name == "tcp_connect"}
    for conn in connects:
        assert _sockaddr(conn.args[1])[:2] == (AF_INET, "127.0.0.1")
        assert conn.args[1].value.port in tcp_ports
    accepted = _one(events, "tcp_accept", lambda e: e.name == "tcp_accept")
    assert accepted.args[1].value.port == connects[0].args[1].value.port


def test_real_namespaces_capture():
    _, events, lines = _read_capture("real-namespaces")
    assert lines == (FIXTURES / "real-namespaces.jsonl").read_text().splitlines()
    cat = [e for e in events if e.comm == "cat"]
    assert {"execve", "openat", "do_exit"} <= {e.name for e in cat}
    (unshare,) = [e for e in events if e.comm == "unshare"]
    assert unshare.name == "do_exit"
    for ev in cat:
        assert (ev.pid, ev.ppid) == (1, 0) and ev.host_pid != 1
        assert ev.host_ppid == unshare.host_pid
        assert ev.pid_id != 0 and ev.mnt_id != 0
    # unshare itself moved to the new mount namespace but stays in the host's PID namespace
    assert (unshare.pid_id, unshare.mnt_id) == (0, cat[0].mnt_id)
