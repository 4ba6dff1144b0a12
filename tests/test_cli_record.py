"""record and info: the context a capture carries (process snapshot, containers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_cli import (
    BOOT,
    DAMAGED,
    ENV,
    HOST,
    _wait_for_capture,
    event,
    jsonl,
    one_error_line,
    run,
)

from ebpfwire import encode
from ebpfwire.capture import (
    CaptureReader,
    CaptureWriter,
    ContainerRecord,
    ProcessRecord,
    SampleRecord,
)
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.cli import output, record

EBPFWIRE = [sys.executable, "-m", "ebpfwire"]
DOCKER_ID = "ab" * 32


def _process(host_pid: int) -> ProcessInfo:
    return ProcessInfo(host_pid, 1, host_pid, 0, 4026531836, 4026531841, 0, "sh", "/bin/sh",
                       "/", ("sh",), "")


def test_info_reports_the_context_a_capture_carries(tmp_path: Path):
    path = tmp_path / "ctx.ewcap"
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for pid in (1, 2, 3):
            writer.write_process(_process(pid))
        writer.write_container(ContainerInfo(0, 0, "", "host"))
        writer.write_container(ContainerInfo(7, 8, DOCKER_ID, "docker"))
    status, out, _ = run("info", str(path))
    assert status == 0
    assert ("context:      3 processes in the snapshot, 2 namespace pairs named "
            "(docker 1, host 1)") in out
    info = json.loads(run("info", "--json", str(path))[1])
    assert info["context"] == {"processes": 3, "containers": 2,
                               "containers_by_runtime": {"docker": 1, "host": 1}}


def test_info_says_a_version_1_capture_has_no_context():
    status, out, _ = run("info", str(DAMAGED))
    assert status == 0 and "context:      none (version 1 has no context records" in out
    info = json.loads(run("info", "--json", str(DAMAGED))[1])
    assert info["context"] == {"processes": 0, "containers": 0, "containers_by_runtime": {}}


def test_appending_to_a_version_1_capture_writes_no_context(tmp_path: Path, capsys):
    path = tmp_path / "v1.ewcap"
    CaptureWriter(path, host=HOST, boot_time_ns=BOOT, version=1).close()
    size = path.stat().st_size
    with CaptureWriter(path, mode="a") as writer:
        assert record.write_context(writer) is None
    assert path.stat().st_size == size
    assert "version-1 capture holds no process or container records" in capsys.readouterr().err


def test_context_goes_right_after_the_header_and_names_this_process(tmp_path: Path):
    path = tmp_path / "ctx.ewcap"
    out = record.create_output(str(path), force=False, append=False, arch="x86_64")
    with out.writer as writer:
        resolver = record.write_context(writer)
    assert resolver is not None
    with CaptureReader(path) as reader:
        records = list(reader)
    kinds = [type(r) for r in records]
    assert kinds == sorted(kinds, key=lambda kind: kind is ContainerRecord)  # processes first
    mine = [r.info for r in records if type(r) is ProcessRecord and r.info.host_pid == os.getpid()]
    assert len(mine) == 1 and mine[0].exe == os.path.realpath(sys.executable)
    pairs = [(r.info.pid_ns, r.info.mnt_ns) for r in records if type(r) is ContainerRecord]
    assert len(pairs) == len(set(pairs)) and (0, 0) in pairs  # each pair once, the host's too


@pytest.mark.live
def test_record_writes_the_snapshot_and_info_reports_it(tmp_path: Path):
    path = tmp_path / "ctx.ewcap"
    proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--events", "close",
                             "--duration", "1"], stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_capture(path, proc)
    with CaptureReader(path) as reader:  # the context is there before any event
        early = {type(r) for r in reader}
    assert ProcessRecord in early and ContainerRecord in early
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with CaptureReader(path) as reader:
        pids = {r.info.host_pid for r in reader if type(r) is ProcessRecord}
    assert os.getpid() in pids and proc.pid in pids
    info = json.loads(run("info", "--json", str(path))[1])
    assert info["context"]["processes"] == len(pids) and info["context"]["containers"] >= 1
    assert info["context"]["containers_by_runtime"]["host"] >= 1  # (0, 0), own mnt ns too


# --------------------------------------------------------------------------- transports


def test_ring_pages_are_for_perf_rings_only(tmp_path: Path):
    path = tmp_path / "x.ewcap"
    line = one_error_line(*run("record", "-o", str(path), "--transport", "ringbuf",
                               "--ring-pages", "2")[::2])
    assert "--ring-pages sizes the per-CPU perf rings; give --ring-bytes" in line
    assert not path.exists()  # created first, removed when nothing could start


def test_the_cli_knows_the_ring_buffer_cpu():
    from ebpfwire.kernel.ringbuf import RINGBUF_CPU

    assert output.RINGBUF_CPU == RINGBUF_CPU
    assert output.cpu_label(RINGBUF_CPU) == "ringbuf" and output.cpu_label(1) == "1"


def test_ring_buffer_samples_in_info_decode_and_table(tmp_path: Path):
    """Samples of cpu 0xFFFFFFFF (one ring for all CPUs), a drop counted on cpu 1."""
    path = tmp_path / "ring.ewcap"
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for ts in (30, 10, 20):  # time order is restored across the window
            writer.write_sample(output.RINGBUF_CPU, encode(event(ts, 3, 9, "w")))
        writer.write_lost(1, 5)
    info = json.loads(run("info", "--json", str(path))[1])
    assert info["samples_by_cpu"] == {"ringbuf": 3} and info["lost_by_cpu"] == {"1": 5}
    out = run("info", str(path))[1]
    assert "per cpu:      ringbuf: 3" in out and "lost:         5 samples (cpu 1: 5)" in out
    status, out, _ = run("decode", "--format", "jsonl", str(path))
    lines = jsonl(out)
    assert status == 0 and [e["ts"] for e in lines if "ts" in e] == [10, 20, 30]
    assert {"lost": 5, "cpu": 1} in lines and all("cpu" not in e for e in lines if "ts" in e)
    assert "-- lost 5 samples on cpu 1 --" in run("decode", str(path))[1]


_TREE = ("read go; (cat /etc/hostname > /dev/null; true); "
         "cat /etc/os-release > /dev/null; exit 3")


def record_held(path: Path, argv: list[str], events: str, exit_status: int,
                *options: str) -> tuple[int, str, str]:
    """Record --pid of ``argv``, a process that waits for a line on its standard input,
    with ``--events``; tell it to go, let it end with ``exit_status``, stop the recorder;
    its pid and the capture's ``decode --format jsonl`` (its stderr checked empty of
    errors by the caller)."""
    held = subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)
    try:
        proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--pid", str(held.pid),
                                 "--events", events, *options],
                                stderr=subprocess.PIPE, text=True, env=ENV)
        _wait_for_capture(path, proc)
        assert held.stdin is not None
        held.stdin.write("go\n")
        held.stdin.close()
        assert held.wait(timeout=60) == exit_status
        time.sleep(1)  # the recorder reads at least every 0.2 s
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        held.kill()
        held.wait()
    status, out, err = run("decode", "--format", "jsonl", str(path))
    assert status == 0, err
    return held.pid, out, err


def _record_tree(path: Path, *options: str) -> tuple[int, list[dict]]:
    """Record --pid of a shell that, once told, runs a subshell (its child) running cat
    (its grandchild), then a cat of its own; the shell's pid and the decoded events."""
    pid, out, _ = record_held(path, ["sh", "-c", _TREE], "execve,openat,close", 3, *options)
    return pid, [e for e in jsonl(out) if "ts" in e]


def _without_identity(events: list[dict]) -> Counter:
    """The events as a multiset of what they did, without times and process ids."""
    drop = {"ts", "pid_id", "mnt_id", "host_ppid", "host_pid", "ppid", "pid"}
    return Counter(json.dumps({k: v for k, v in e.items() if k not in drop}, sort_keys=True)
                   for e in events)


@pytest.mark.live
def test_pid_follows_the_tree_and_ringbuf_records_what_perf_records(tmp_path: Path):
    shell, perf = _record_tree(tmp_path / "perf.ewcap")
    by_pid: dict[int, int] = {}
    for e in perf:
        by_pid.setdefault(e["host_pid"], e["host_ppid"])
    # everything recorded is the shell's tree; the grandchild's cat is there
    assert all(by_pid.get(p) == shell or p == shell or by_pid.get(by_pid.get(p)) == shell
               for p in by_pid)
    grandchild = [e for e in perf if e["event"] == "openat" and e["args"][1]["value"]
                  == "/etc/hostname" and by_pid.get(e["host_ppid"]) == shell]
    assert len(grandchild) == 1 and grandchild[0]["comm"] == "cat"
    assert any(e["event"] == "openat" and e["args"][1]["value"] == "/etc/os-release"
               and e["host_ppid"] == shell for e in perf)

    shell, ring = _record_tree(tmp_path / "ring.ewcap", "--transport", "ringbuf")
    assert _without_identity(ring) == _without_identity(perf)
    with CaptureReader(tmp_path / "ring.ewcap") as reader:
        cpus = {r.cpu for r in reader if type(r) is SampleRecord}
    assert cpus == {output.RINGBUF_CPU}
    info = json.loads(run("info", "--json", str(tmp_path / "ring.ewcap"))[1])
    assert info["samples_by_cpu"] == {"ringbuf": len(ring)} and info["lost"] == 0


_CLOSES = 20_000
_BURST = ("import os, sys\nsys.stdin.readline()\n"
          f"for _ in range({_CLOSES}):\n"
          "    try:\n        os.close(-1)\n    except OSError:\n        pass\n")


@pytest.mark.live
def test_a_tiny_ring_buffer_loses_and_the_capture_counts_it(tmp_path: Path):
    path = tmp_path / "tiny.ewcap"
    burst = subprocess.Popen([sys.executable, "-c", _BURST], stdin=subprocess.PIPE, text=True)
    try:
        proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--pid", str(burst.pid),
                                 "--events", "close", "--transport", "ringbuf",
                                 "--ring-bytes", "4096"], stderr=subprocess.PIPE, text=True,
                                env=ENV)
        _wait_for_capture(path, proc)
        assert burst.stdin is not None
        proc.send_signal(signal.SIGSTOP)  # the recorder reads nothing while the burst runs:
        try:                              # the 4 KiB ring must overflow, whatever the load
            burst.stdin.write("go\n")
            burst.stdin.close()
            assert burst.wait(timeout=120) == 0
        finally:
            proc.send_signal(signal.SIGCONT)
        time.sleep(1)  # the drop counter is read at least every 0.1 s
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        burst.kill()
        burst.wait()
    info = json.loads(run("info", "--json", str(path))[1])
    closes = info["events"]["close"]
    bad = sum(1 for e in jsonl(run("decode", "--format", "jsonl", "--failed", str(path))[1])
              if e.get("errno") == "EBADF")
    assert info["lost"] > 0 and info["lost_records"] > 0 and "ringbuf" not in info["lost_by_cpu"]
    assert bad <= closes and bad + info["lost"] >= _CLOSES  # each close of ours: seen or lost
    assert closes + info["lost"] <= _CLOSES + 100  # and the interpreter's own few at exit
    assert f"recorded {closes} events ({info['lost']} lost)" in err
    assert (f"ebpfwire: {info['lost']} events lost: the ring (4096 bytes) filled faster than "
            "it was read; try --ring-bytes 16384, fewer --events") in err  # what to do
