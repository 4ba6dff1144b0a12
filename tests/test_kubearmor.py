"""KubeArmor log mapping per event kind, on the fixture captures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ebpfwire import decode
from ebpfwire.capture import CaptureReader
from ebpfwire.capture.snapshot import ContainerInfo
from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import Lost, Sample
from ebpfwire.output.kubearmor import KubeArmorLogs, result_text, sockaddr_resource, updated_time
from ebpfwire.process.procfs import snapshot
from ebpfwire.process.table import ProcessTable
from ebpfwire.wire.events import SockAddr

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def logs(name: str, containers: list[ContainerInfo] = (), version: str = "newest") -> list[tuple]:
    """(event, log) for every event of a fixture, through a fresh process table."""
    table = ProcessTable()
    for info in containers:
        table.add_container(info)
    out = []
    with CaptureReader(FIXTURES / name) as reader:
        kubearmor = KubeArmorLogs(reader.header.hostname, reader.header.boot_time_ns,
                                  version=version)
        for record, event in reader.events(strict=False):
            if event is None:
                table.lost(record.count)
                continue
            out.append((event, kubearmor.log(event, table.update(event))))
    return out


def test_file_log_of_cat_opening_a_file() -> None:
    found = [log for event, log in logs("real-workload.ewcap")
             if log and log["Resource"] == "/tmp/ebpfwire-fixture/beta.txt"]
    assert len(found) == 1
    log = found[0]
    assert log["ProcessName"] == "/bin/cat"
    assert log["Source"] == ("/bin/cat /tmp/ebpfwire-fixture/alpha.txt "
                             "/tmp/ebpfwire-fixture/beta.txt")
    assert log["ParentProcessName"] == "sh"      # no snapshot in this capture: the comm
    assert (log["Operation"], log["Result"], log["Type"]) == ("File", "Passed", "HostLog")
    assert log["Data"] == "syscall=SYS_OPENAT fd=-100 flags=O_RDONLY"
    assert log["HostName"] == "vm" and "ContainerID" not in log


def test_failed_open_result_is_the_errno_message() -> None:
    failed = [log for event, log in logs("real-workload.ewcap", version="2023")
              if log and log["Operation"] == "File" and event.retval == -2]
    assert failed and {log["Result"] for log in failed} == {"No such file or directory"}
    # KubeArmor's newest writer does not write ENOENT (nor EINPROGRESS) results
    assert not [log for event, log in logs("real-workload.ewcap") if log and event.retval == -2]


def test_one_process_log_per_exec_at_its_result() -> None:
    pairs = logs("real-workload.ewcap")
    exits = [event for event, _ in pairs if event.name == "execve" and event.argnum == 0]
    process_logs = [log for _, log in pairs if log and log["Data"] == "syscall=SYS_EXECVE"]
    assert len(process_logs) == len(exits) == 5
    true_log = [log for log in process_logs if log["ProcessName"] == "/bin/true"][0]
    assert true_log["Operation"] == "Process"
    assert true_log["Resource"] == "/bin/true " + " ".join(f"a{i}" for i in range(1, 20)) + " ..."
    assert true_log["Source"] == true_log["ParentProcessName"] == "sh"
    # the exec's entry, security_bprm_check and do_exit give no log
    for event, log in pairs:
        if event.name in ("security_bprm_check", "do_exit") or (
                event.name == "execve" and event.argnum):
            assert log is None


def test_network_logs() -> None:
    pairs = [(event, log) for event, log in logs("real-workload.ewcap") if log]
    by_event = {}
    for event, log in pairs:
        by_event.setdefault(event.name, []).append(log)
    socket_log = by_event["socket"][0]
    assert socket_log["Resource"] == "domain=AF_INET type=SOCK_STREAM|SOCK_CLOEXEC protocol=0"
    assert socket_log["Data"] == "syscall=SYS_SOCKET"
    refused = [log for log in by_event["connect"] if log["Result"] != "Passed"]
    assert [log["Result"] for log in refused] == ["Connection refused"]
    assert re.fullmatch(r"sa_family=AF_INET sin_port=\d+ sin_addr=127\.0\.0\.1",
                        refused[0]["Resource"])
    tcp = by_event["tcp_connect"][0]
    assert re.fullmatch(r"remoteip=127\.0\.0\.1 port=\d+ protocol=TCP", tcp["Resource"])
    assert tcp["Data"] == "kprobe=tcp_connect domain=AF_INET"
    assert by_event["listen"][0]["Data"].startswith("syscall=SYS_LISTEN fd=")
    assert all(log["Operation"] == "Network" and log["ProcessName"] == "/usr/bin/python3"
               for name in ("socket", "bind", "listen", "connect", "accept", "tcp_connect",
                            "tcp_accept") for log in by_event[name])


def test_container_logs_from_namespaces() -> None:
    pairs = logs("real-namespaces.ewcap")
    inside = [e for e, _ in pairs if e.pid_id and e.mnt_id]
    # no container record names them: KubeArmor drops their events
    assert inside and all(log is None for e, log in pairs if e.pid_id and e.mnt_id)
    event = inside[0]
    cid = "ab" * 32
    named = logs("real-namespaces.ewcap",
                 [ContainerInfo(event.pid_id, event.mnt_id, cid, "docker")])
    assert {(log["Type"], log["ContainerID"]) for e, log in named if log and e.pid_id} == {
        ("ContainerLog", cid)}
    as_host = logs("real-namespaces.ewcap",
                   [ContainerInfo(event.pid_id, event.mnt_id, "", "host")])
    assert {log["Type"] for e, log in as_host if log and e.pid_id} == {"HostLog"}


def test_a_mount_namespace_of_its_own_is_the_host() -> None:
    """ip netns exec, unshare --mount: pid_id 0, a mount namespace of its own; KubeArmor
    looks containers up only when both ids are non-zero."""
    pairs = logs("real-workload.ewcap")
    event, _ = next((e, log) for e, log in pairs if log)
    moved = event.replace(mnt_id=4026532999)
    unknown = ContainerInfo(0, 4026532999, "", "unknown")
    table = ProcessTable()
    table.add_container(unknown)
    log = KubeArmorLogs("h", 0).log(moved, table.update(moved))
    assert log["Type"] == "HostLog" and "ContainerID" not in log


EXPECTED_OPERATIONS = {
    "openat": "File", "unlinkat": "File", "rmdir": "File", "chown": "File",
    "fchownat": "File", "socket": "Network", "connect": "Network", "bind": "Network",
    "listen": "Network", "accept": "Network", "tcp_accept": "Network",
    "tcp_connect_v6": "Network", "ptrace": "Process",
    "setuid": "Syscall", "setgid": "Syscall", "mount": "Syscall", "umount2": "Syscall",
    "execve": "Process", "udp_send_skb": "Network",
}


def test_every_kind_of_the_all_types_fixture() -> None:
    operations: dict = {}
    for event, log in logs("all-types.ewcap"):
        if log is not None:
            operations.setdefault(event.name, set()).add(log["Operation"])
            if event.name in ("unlinkat", "rmdir", "chown", "fchownat", "ptrace"):
                operations[event.name].discard("Syscall")   # the audit copy
            assert log["Result"] == result_text(event.retval)
            assert log["Timestamp"] == (event.ts + 1763776800 * 10**9) // 10**9
    assert {name: ops.pop() for name, ops in operations.items()} == EXPECTED_OPERATIONS


@pytest.mark.parametrize(("name", "data", "resource"), [
    ("ptrace", "syscall=SYS_PTRACE request=PTRACE_ATTACH pid=4242 process=/usr/bin/curl",
     "/usr/bin/curl"),
    # KubeArmor reads mount's flags as a number where its parser gave a name: 0
    ("mount", "syscall=SYS_MOUNT source=/dev/sda1 target=/mnt filesystem=ext4 "
              "mountflag=0 data=errors=remount-ro", ""),
    ("fchownat", "syscall=SYS_FCHOWNAT userid=0 group=0 mode=256", "file"),
    ("udp_send_skb", "kfunc=UDP_SENDSKB domain=example.com daddr=8.8.8.8 qtype=AAAA",
     "sa_family=AF_INET sin_port=53"),
    ("rmdir", "syscall=SYS_RMDIR", "/srv/data"),
])
def test_data_and_resource(name: str, data: str, resource: str) -> None:
    found = [log for event, log in logs("all-types.ewcap") if event.name == name and log]
    assert (found[0]["Data"], found[0]["Resource"]) == (data, resource)


def test_cwd_and_tty_from_the_extended_layouts() -> None:
    pairs = [(e, log) for e, log in logs("layout-hash.ewcap") if log]
    opened = [log for e, log in pairs if e.name == "openat"][0]
    assert opened["Cwd"] == "/home/user/" and opened["TTY"] == "pts/0"
    assert "Cwd" not in [log for e, log in logs("layout-classic.ewcap") if log][0]


def test_helpers() -> None:
    assert result_text(0) == "Passed" and result_text(5) == "Passed"
    assert result_text(-13) == "Permission denied"
    assert result_text(-4000) == "Unknown (-4000)"
    assert updated_time(1_647_101_470_296_322_999) == "2022-03-12T16:11:10.296322Z"
    assert sockaddr_resource(SockAddr.unix("/run/x.sock")) == (
        "sa_family=AF_UNIX sun_path=/run/x.sock")
    assert sockaddr_resource(SockAddr.inet6("::1", 443)) == (
        "sa_family=AF_INET6 sin_port=443 sin_addr=::1")
    assert sockaddr_resource(None) == ""


@pytest.mark.live
def test_live_bash_sh_cat(tmp_path: Path) -> None:
    """bash (running before the recording, so named from the snapshot) starts sh, which
    starts cat; the log of cat's open names cat and, as its parent, sh."""
    target = tmp_path / "known.txt"
    target.write_text("x\n")
    bash = subprocess.Popen(["bash", "-c", f"read go; sh -c 'cat {target}; true'"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        with Monitor(events=["openat", "execve", "security_bprm_check", "do_exit"],
                     page_count=256) as monitor:
            table = ProcessTable()
            for info in snapshot():
                table.add_process(info)
            bash.stdin.write(b"go\n")
            bash.stdin.flush()
            ours, events, lost = {bash.pid}, [], 0
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for record in monitor.reader.read_batch(timeout=0.2):
                    if isinstance(record, Lost):
                        lost += record.count
                        continue
                    if not isinstance(record, Sample):
                        continue
                    event = decode(record.data)
                    if event.host_pid in ours or event.host_ppid in ours:
                        ours.add(event.host_pid)
                        events.append(event)
                if any(e.name == "do_exit" and e.host_pid == bash.pid for e in events):
                    break
        assert bash.wait(timeout=10) == 0
    finally:
        if bash.poll() is None:
            bash.kill()
            bash.wait()
    kubearmor = KubeArmorLogs(os.uname().nodename, 0)
    opened = []
    for event in sorted(events, key=lambda e: e.ts):
        log = kubearmor.log(event, table.update(event))
        if log and log["Resource"] == str(target):
            opened.append(log)
    assert len(opened) == 1, f"lost {lost}; events: {[(e.name, e.host_pid) for e in events]}"
    log = opened[0]
    assert os.path.samefile(log["ProcessName"], shutil.which("cat"))
    assert os.path.samefile(log["ParentProcessName"], shutil.which("sh"))
    assert (log["Operation"], log["Result"], log["Type"]) == ("File", "Passed", "HostLog")
    assert log["Source"] == f"{log['ProcessName']} {target}"
    assert table.get(bash.pid).programs[0].source == "snapshot"
    assert os.path.samefile(table.get(bash.pid).programs[0].exe, shutil.which("bash"))
