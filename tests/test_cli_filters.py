"""Filters and consistency: unknown event names, --failed, --comm, info's layout and damage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import DAMAGED, ENV, FIXTURES, SAMPLE, jsonl, one_error_line, run, write_capture


def test_unknown_event_name_is_refused_with_the_closest_names():
    line = one_error_line(*run("decode", "--event", "tcp_conect", str(SAMPLE))[::2])
    assert "--event: unknown event 'tcp_conect'; closest known: tcp_connect" in line
    line = one_error_line(*run("decode", "--event", "nosuchevent", str(SAMPLE))[::2])
    assert "unknown event 'nosuchevent'; closest known: " in line and "event_<id>" in line
    # names of either architecture, numbered events and special events are all accepted
    for name in ("openat", "renameat", "event_9999", "do_exit", "tcp_connect_v6"):
        assert run("decode", "--event", name, str(SAMPLE))[0] == 0, name


def test_failed_keeps_only_negative_results():
    status, out, _ = run("decode", "--format", "jsonl", "--failed", str(SAMPLE))
    events = jsonl(out)
    _, everything, _ = run("decode", "--format", "jsonl", str(SAMPLE))
    expected = [e for e in jsonl(everything) if "ts" in e and e["retval"] < 0]
    assert status == 0 and events == expected and len(events) >= 2
    assert {e["errno"] for e in events} >= {"ECONNREFUSED", "EACCES"}


def test_comm_longer_than_the_kernel_keeps_is_refused():
    line = one_error_line(*run("decode", "--comm", "a-very-long-task-name", str(SAMPLE))[::2])
    assert "expected a task name of 1 to 15 bytes" in line
    assert "15 bytes" in one_error_line(*run("trace", "--comm", "x" * 16)[::2])


def test_info_checks_the_layout_as_decode_does():
    classic = str(FIXTURES / "layout-classic.ewcap")
    info_line = one_error_line(*run("info", "--layout", "hash", classic)[::2])
    decode_line = one_error_line(*run("decode", "--layout", "hash", classic)[::2])
    assert info_line == decode_line
    assert "layout 'hash' (225-byte header) does not fit" in info_line
    status, out, _ = run("info", "--layout", "cwd", str(FIXTURES / "layout-cwd.ewcap"))
    assert status == 0 and "layout:       cwd\n" in out
    status, out, _ = run("info", "--arch", "arm64", str(SAMPLE))
    assert status == 0 and "arch:         x86_64 (decoded as arm64, from --arch)" in out


def test_info_gives_the_offset_of_a_torn_tail(tmp_path: Path):
    path = tmp_path / "torn.ewcap"
    offsets = write_capture(path, 5)
    data = path.read_bytes()
    path.write_bytes(data[:offsets[4] + 7])
    _, _, err = run("decode", str(path))
    assert f"damaged record at file offset {offsets[4]}:" in err
    status, out, _ = run("info", str(path))
    assert status == 0
    assert f"  at file offset {offsets[4]}: " in out and "cut record" in out
    info = json.loads(run("info", "--json", str(path))[1])
    assert [d["offset"] for d in info["damage"]] == [offsets[4]]
    info = json.loads(run("info", "--json", str(DAMAGED))[1])
    assert [d["offset"] for d in info["damage"]] == [647, 839]


# --------------------------------------------------------------------------- live


@pytest.mark.live
def test_trace_failed_and_comm_show_only_matching_events(tmp_path: Path):
    name = f"ew{os.getpid() % 100000}"  # a task name of our own
    tool = tmp_path / name
    tool.symlink_to("/bin/cat")
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "trace", "--events", "openat",
                             "--comm", name, "--failed", "--format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for _ in range(10):  # trace says nothing once attached: run the tool for 5 s
            subprocess.run([str(tool), "/etc/hostname", str(tmp_path / "missing")],
                           capture_output=True, timeout=30)
            time.sleep(0.5)
        time.sleep(1)  # trace holds events 0.3 s to order them
    finally:
        proc.send_signal(2)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
    events = jsonl(out)
    assert events, err
    assert all(e["comm"] == name and e["retval"] < 0 for e in events)
    assert any(e["args"][1]["value"] == str(tmp_path / "missing") for e in events)


@pytest.mark.live
def test_record_comm_keeps_only_that_task(tmp_path: Path):
    name = f"ew{os.getpid() % 100000}r"
    tool = tmp_path / name
    tool.symlink_to("/bin/cat")
    path = tmp_path / "comm.ewcap"
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "record", "-o", str(path),
                             "--events", "openat,close", "--comm", name, "--duration", "30"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("ebpfwire: recording to")
    for _ in range(3):
        subprocess.run([str(tool), "/etc/hostname"], capture_output=True, timeout=30)
    time.sleep(1)
    proc.send_signal(2)
    proc.communicate(timeout=60)
    events = [e for e in jsonl(run("decode", "--format", "jsonl", str(path))[1]) if "ts" in e]
    assert events and all(e["comm"] == name for e in events)
    assert any(e["event"] == "openat" and e["args"][1]["value"] == "/etc/hostname"
               for e in events)
