"""/proc snapshot, cgroup parsing for every runtime, and the container resolver (live as root)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebpfwire.capture.snapshot import ContainerInfo
from ebpfwire.process.procfs import (
    ContainerResolver,
    container_from_cgroup,
    host_namespaces,
    read_process,
    snapshot,
    suspended_ns,
)

ID = "3f4e" + "a1b2c3d4" * 7 + "0a1b"   # 64 hex digits
assert len(ID) == 64


@pytest.mark.parametrize(("text", "expected"), [
    # cgroup v2, systemd driver
    (f"0::/system.slice/docker-{ID}.scope\n", ("docker", ID)),
    (f"0::/system.slice/docker-{ID}.scope/init.scope\n", ("docker", ID)),
    (f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b_3c.slice/"
     f"cri-containerd-{ID}.scope\n", ("containerd", ID)),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9.slice/"
     f"crio-{ID}.scope\n", ("cri-o", ID)),
    (f"0::/machine.slice/libpod-{ID}.scope/container\n", ("podman", ID)),
    (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n",
     ("podman", ID)),
    # cgroup v2, cgroupfs driver
    (f"0::/kubepods/besteffort/pod0f1e2d3c-aaaa-bbbb-cccc-000000000000/{ID}\n",
     ("containerd", ID)),
    (f"0::/docker/{ID}\n", ("docker", ID)),
    (f"0::/libpod_parent/libpod-{ID}\n", ("podman", ID)),
    # cgroup v1: many lines, the container in each controller
    ("12:pids:/docker/" + ID + "\n11:memory:/docker/" + ID + "\n1:name=systemd:/docker/" + ID
     + "\n0::/\n", ("docker", ID)),
    (f"5:cpu,cpuacct:/kubepods/burstable/pod1/{ID}\n3:memory:/kubepods/burstable/pod1/{ID}\n",
     ("containerd", ID)),
    (f"4:memory:/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n", ("cri-o", ID)),
    # nested: the outer container is the one the host knows
    (f"0::/docker/{ID}/docker/{'f' * 64}\n", ("docker", ID)),
    # host processes
    ("0::/init.scope\n", ("host", "")),
    ("0::/user.slice/user-0.slice/session-3.scope\n", ("host", "")),
    ("0::/\n", ("host", "")),
    # this VM: a 32-hex directory that is no runtime's
    ("4:memory:/process_api/54e33b9f74c3338498f31364cee61299\n0::/\n", ("host", "")),
    # cri-o's monitor is not the container; a 63-digit id is no id
    (f"0::/machine.slice/crio-conmon-{ID}.scope\n", ("host", "")),
    (f"0::/system.slice/docker-{ID[:63]}.scope\n", ("host", "")),
    ("", ("host", "")),
])
def test_container_from_cgroup(text: str, expected: tuple[str, str]) -> None:
    assert container_from_cgroup(text) == expected


def test_v2_line_wins_over_v1() -> None:
    other = "e" * 64
    text = f"4:memory:/docker/{other}\n0::/system.slice/docker-{ID}.scope\n"
    assert container_from_cgroup(text) == ("docker", ID)


def test_snapshot_finds_this_process() -> None:
    processes = {info.host_pid: info for info in snapshot()}
    me = processes[os.getpid()]
    assert me.exe == os.path.realpath(sys.executable)
    assert me.argv == tuple(Path("/proc/self/cmdline").read_bytes().decode().split("\0")[:-1])
    assert me.cwd == os.getcwd()
    assert me.host_ppid == os.getppid()
    assert me.uid == os.getuid()
    assert me.pid_ns == os.stat("/proc/self/ns/pid").st_ino
    assert me.mnt_ns == os.stat("/proc/self/ns/mnt").st_ino
    # start_ns is on the events' clock (CLOCK_MONOTONIC), to a clock tick
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert 0 < me.start_ns <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) + tick


def test_snapshot_kernel_thread_and_weird_names(tmp_path: Path) -> None:
    # a fake /proc: a kernel thread, a comm with ") (" in it, and a vanished entry
    proc = tmp_path / "proc"
    kthread = proc / "2"
    kthread.mkdir(parents=True)
    flags = 0x00200040
    (kthread / "stat").write_bytes(
        b"2 (kthreadd) S 0 0 0 0 -1 " + str(flags).encode() + b" 0 0 0 0 0 0 0 0 20 0 1 0 "
        b"24 0 0\n")
    (kthread / "status").write_bytes(b"Name:\tkthreadd\nUid:\t0\t0\t0\t0\nNSpid:\t2\n")
    odd = proc / "77"
    odd.mkdir()
    (odd / "stat").write_bytes(
        b"77 (a) (b\xff) S 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n")
    (odd / "status").write_bytes(b"Uid:\t1000\t1000\t1000\t1000\nNSpid:\t77\t5\n")
    (odd / "cmdline").write_bytes(b"prog\0--flag\0\0")
    (odd / "cgroup").write_text(f"0::/system.slice/docker-{ID}.scope\n")
    (proc / "78").mkdir()    # vanished: no stat
    processes = snapshot(str(proc))
    assert [info.host_pid for info in processes] == [2, 77]
    kernel, other = processes
    assert (kernel.comm, kernel.exe, kernel.argv) == ("kthreadd", "", ())
    ticks_ns = 24 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert abs(kernel.start_ns - (ticks_ns - suspended_ns())) < 1_000_000
    assert other.comm == "a) (b\udcff"
    assert other.pid == 5 and other.uid == 1000 and other.host_ppid == 1
    assert other.argv == ("prog", "--flag", "")
    assert other.container_id == ID
    # files it could not read (exe, cwd, ns): empty, yet the process is kept (it is there)
    assert (other.exe, other.cwd, other.pid_ns, other.mnt_ns) == ("", "", 0, 0)


def test_read_process_gone() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert read_process(child.pid) is None


def test_resolver_host_pairs_once() -> None:
    resolver = ContainerResolver(host=(111, 222))
    assert resolver.resolve(0, 0, 1) == ContainerInfo(0, 0, "", "host")
    assert resolver.resolve(0, 0, 1) is None
    # a writer that sends the host's real inodes
    assert resolver.resolve(111, 222, 1) == ContainerInfo(111, 222, "", "host")


def test_resolver_unknown_when_nobody_has_the_pair() -> None:
    resolver = ContainerResolver()
    info = resolver.resolve(1, 2, 999_999_999)
    assert info == ContainerInfo(1, 2, "", "unknown")
    assert resolver.resolve_sample(bytes(8) + (1).to_bytes(4, "little")
                                   + (2).to_bytes(4, "little") + bytes(8)) is None


CGROUP2 = Path("/sys/fs/cgroup/unified")


def _container_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups and namespaces"
    if not (CGROUP2 / "cgroup.procs").exists():
        return f"no cgroup v2 hierarchy at {CGROUP2}"
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    return None


@pytest.mark.live
@pytest.mark.skipif(_container_skip_reason() is not None,
                    reason=_container_skip_reason() or "")
def test_resolver_live_docker_scope() -> None:
    container_id = secrets.token_hex(32)
    top = CGROUP2 / f"ebpfwire-test-{secrets.token_hex(4)}"
    scope = top / f"docker-{container_id}.scope"
    scope.mkdir(parents=True)
    child = None
    sleeper = 0
    try:
        child = subprocess.Popen(["unshare", "--pid", "--mount", "--fork", "--kill-child",
                                  "sleep", "30"])
        sleeper = _wait_for_child(child.pid)
        (scope / "cgroup.procs").write_text(str(sleeper))
        pid_ns = os.stat(f"/proc/{sleeper}/ns/pid").st_ino
        mnt_ns = os.stat(f"/proc/{sleeper}/ns/mnt").st_ino
        assert pid_ns != host_namespaces()[0]

        resolver = ContainerResolver()
        assert resolver.resolve(pid_ns, mnt_ns, sleeper) == ContainerInfo(
            pid_ns, mnt_ns, container_id, "docker")
        assert resolver.resolve(pid_ns, mnt_ns, sleeper) is None
        # the event's process has gone (a pid nobody has): found from another with the pair
        again = ContainerResolver()
        assert again.resolve(pid_ns, mnt_ns, 999_999_999) == ContainerInfo(
            pid_ns, mnt_ns, container_id, "docker")
        # and the snapshot sees it too
        info = read_process(sleeper)
        assert info is not None and info.container_id == container_id and info.pid == 1
    finally:
        if sleeper:
            os.kill(sleeper, signal.SIGKILL)   # pid 1 of its namespace: the rest goes too
        if child is not None:
            child.kill()
            child.wait()
        _remove_cgroup(scope)
        _remove_cgroup(top)


def _wait_for_child(parent: int) -> int:
    """The pid of unshare's forked child (the sleep, pid 1 of its namespace)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        if children:
            pid = int(children[0])
            if os.stat(f"/proc/{pid}/ns/pid").st_ino != host_namespaces()[0]:
                return pid
        time.sleep(0.01)
    raise AssertionError(f"unshare (pid {parent}) started no child in a new PID namespace")


def _remove_cgroup(path: Path) -> None:
    """rmdir once its processes have left (the kernel empties it when they exit)."""
    deadline = time.monotonic() + 10
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
