"""A user on the traced machine cannot stop a recording through the /proc snapshot, and a
filtered recording keeps only the processes it was asked for (issue: hostile hosts, 2 and 10).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import ENV

from ebpfwire.capture import CaptureReader, ProcessRecord
from ebpfwire.capture.snapshot import ProcessInfo
from ebpfwire.process.procfs import ARGV_BYTES_MAX, asked_for, snapshot

EBPFWIRE = [sys.executable, "-m", "ebpfwire"]
HUGE_ARGV = ["sh", "-c", "sleep 60; :", "x"] + ["A" * 131071] * 12   # 1.5 MiB, as reported


def _fake_process(proc: Path, pid: int, cmdline: bytes) -> None:
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    (entry / "stat").write_bytes(
        f"{pid} (sh) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n".encode())
    (entry / "status").write_bytes(f"Uid:\t65534\t65534\t65534\t65534\nNSpid:\t{pid}\n".encode())
    (entry / "cmdline").write_bytes(cmdline)


def test_a_huge_command_line_is_cut_to_the_bound_and_marked(tmp_path: Path):
    proc = tmp_path / "proc"
    _fake_process(proc, 40, b"\0".join(arg.encode() for arg in HUGE_ARGV) + b"\0")
    _fake_process(proc, 41, b"ls\0-l\0")
    cut, whole = snapshot(str(proc))
    assert cut.cut and not whole.cut
    assert sum(len(arg) for arg in cut.argv) + len(cut.argv) - 1 == ARGV_BYTES_MAX
    assert cut.argv[:4] == tuple(HUGE_ARGV[:4]) and set(cut.argv[4]) == {"A"}
    assert whole.argv == ("ls", "-l")
    again = ProcessInfo.from_payload(cut.to_payload())
    assert again == cut and again.cut
    assert len(cut.to_payload()) < 2 * ARGV_BYTES_MAX


def test_a_payload_without_flags_reads_as_not_cut():
    info = ProcessInfo(5, 1, 5, 0, 1, 2, 0, "sh", "/bin/sh", "/", ("sh",), "")
    assert not ProcessInfo.from_payload(info.to_payload()[:-4]).cut


def _tree() -> list[ProcessInfo]:
    def p(pid: int, ppid: int, comm: str) -> ProcessInfo:
        return ProcessInfo(pid, ppid, pid, 0, 1, 2, 0, comm, "/bin/" + comm, "/", (comm,), "")
    return [p(1, 0, "init"), p(10, 1, "sshd"), p(11, 10, "bash"), p(12, 11, "make"),
            p(13, 12, "cc"), p(20, 1, "cron"), p(21, 20, "backup"), p(30, 1, "nginx")]


def test_pid_keeps_the_tree_below_it_and_its_ancestors():
    assert [p.host_pid for p in asked_for(_tree(), pid=11)] == [1, 10, 11, 12, 13]
    assert [p.host_pid for p in asked_for(_tree(), comm="backup")] == [1, 20, 21]
    assert [p.host_pid for p in asked_for(_tree(), pid=30, comm="cc")] == [1, 10, 11, 12, 13, 30]
    assert asked_for(_tree()) == _tree()
    assert asked_for(_tree(), pid=999) == []


def _fake_tree(proc: Path) -> None:
    for pid, ppid, comm in ((1, 0, "init"), (10, 1, "sshd"), (11, 10, "bash"), (12, 11, "make"),
                            (20, 1, "cron"), (21, 20, "backup"), (30, 1, "nginx")):
        _fake_process(proc, pid, f"{comm}\0".encode())
        stat = proc / str(pid) / "stat"
        stat.write_bytes(stat.read_bytes().replace(b"(sh) S 1", f"({comm}) S {ppid}".encode()))


@pytest.mark.parametrize(("pid", "comm"), [(11, None), (None, "backup"), (30, "make"),
                                           (999, None)])
def test_a_filtered_snapshot_reads_the_others_stat_only(tmp_path: Path, monkeypatch, pid, comm):
    """A live command's start reads all of /proc only for the processes it was asked for."""
    from ebpfwire.process import procfs

    proc = tmp_path / "proc"
    _fake_tree(proc)
    kept = asked_for(snapshot(str(proc)), pid, comm)
    read = []

    def counted(host_pid, *args):
        read.append(host_pid)
        return whole_read(host_pid, *args)

    whole_read = procfs.read_process
    monkeypatch.setattr(procfs, "read_process", counted)
    assert snapshot(str(proc), pid, comm) == kept
    assert read == [info.host_pid for info in kept] and (kept or pid == 999)


def test_a_deep_chain_needs_no_recursion():
    chain = [ProcessInfo(i, i - 1, i, 0, 1, 2, 0, "p", "/p", "/", ("p",), "")
             for i in range(1, 20_001)]
    assert len(asked_for(chain, pid=1)) == 20_000
    assert len(asked_for(chain, comm="p")) == 20_000


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.live
def test_record_survives_a_user_with_a_huge_command_line(tmp_path: Path):
    """The reported run: nobody runs sh with 1.5 MiB of arguments; record keeps going."""
    hostile = subprocess.Popen(HUGE_ARGV, executable="/bin/sh",
                               preexec_fn=_as_nobody, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while len(Path(f"/proc/{hostile.pid}/cmdline").read_bytes()) < 1_000_000:
            assert time.monotonic() < deadline, "the hostile process did not start"
            time.sleep(0.05)
        path = tmp_path / "r.ewcap"
        done = subprocess.run([*EBPFWIRE, "record", "-o", str(path), "--duration", "2",
                               "--events", "close"], capture_output=True, text=True, env=ENV,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        with CaptureReader(path) as reader:
            found = [r.info for r in reader
                     if type(r) is ProcessRecord and r.info.host_pid == hostile.pid]
        assert len(found) == 1 and found[0].cut
        assert found[0].argv[:4] == tuple(HUGE_ARGV[:4])
        assert sum(len(arg) + 1 for arg in found[0].argv) - 1 == ARGV_BYTES_MAX
    finally:
        hostile.kill()
        hostile.wait()


@pytest.mark.live
def test_record_pid_keeps_only_that_tree_and_its_ancestors(tmp_path: Path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        path = tmp_path / "p.ewcap"
        done = subprocess.run([*EBPFWIRE, "record", "-o", str(path), "--duration", "0.5",
                               "--pid", str(sleeper.pid), "--events", "close"],
                              capture_output=True, text=True, env=ENV, timeout=120)
        assert done.returncode == 0, done.stderr
        with CaptureReader(path) as reader:
            pids = {r.info.host_pid for r in reader if type(r) is ProcessRecord}
        ancestors, pid = set(), os.getpid()
        while pid > 0:
            ancestors.add(pid)
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert pids == ancestors | {sleeper.pid}
    finally:
        sleeper.kill()
        sleeper.wait()
